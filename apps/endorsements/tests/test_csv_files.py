"""Malformed CSV files through the real batch endpoint (issue 8, kind 6): a fault of the whole file is a precise
422 on `file` and writes nothing; a fault of one row rejects that row (with its data row and file line) and
keeps every other; blank rows are skipped and not counted."""

from __future__ import annotations

from datetime import date

import pytest
from django.utils import timezone

from apps.endorsements.models import Endorsement, EndorsementBatch
from apps.endorsements.parsing import MAX_ROWS
from apps.endorsements.tests.factories import PolicyFactory
from apps.endorsements.tests.test_bad_input import upload
from apps.outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db

HEADER = "employee_code,first_name,last_name,date_of_birth,gender,email,type,effective_date"
TODAY = date(2026, 6, 1)


def row(code: str, **cells: str) -> str:
    values = {
        "employee_code": code,
        "first_name": "Asha",
        "last_name": "Rao",
        "date_of_birth": "1990-05-17",
        "gender": "female",
        "email": f"{code.lower()}@example.com",
        "type": "addition",
        "effective_date": TODAY.isoformat(),
        **cells,
    }
    return ",".join(values.values())


@pytest.fixture
def policy(time_machine):
    time_machine.move_to(timezone.make_aware(timezone.datetime(2026, 6, 1, 10, 0)), tick=False)
    return PolicyFactory()


@pytest.fixture
def client(make_key, policy):
    return make_key(partner=policy.employer.partner, employers=[policy.employer])


def accepted_codes(batch_id: int) -> set[str]:
    return set(Endorsement.objects.filter(batch_id=batch_id).values_list("employee_code", flat=True))


def nothing_written() -> bool:
    return not (
        Endorsement.objects.exists()
        or EndorsementBatch.objects.exists()
        or OutboxMessage.objects.filter(topic__startswith="endorsements").exists()
    )


@pytest.mark.parametrize(
    ("content", "detail"),
    [
        (b"", "The file is empty."),
        (b"\n\n", "The file is empty."),
        (HEADER.encode() + b"\n", "The file has a header but no rows."),
        (HEADER.encode() + b"\n,,,,,,,\n\n", "The file has a header but no rows."),
        (
            HEADER.replace(",", ";").encode() + b"\n" + row("E-1").replace(",", ";").encode(),
            "The file is delimited by semicolon (;), not commas; save it as comma-separated CSV.",
        ),
        (
            HEADER.replace(",", "\t").encode() + b"\n",
            "The file is delimited by tab, not commas; save it as comma-separated CSV.",
        ),
        (
            b"employee_code,type\nE-1,addition\n",
            "Missing column(s): first_name, last_name, date_of_birth, gender, email, effective_date.",
        ),
        (
            (HEADER + ",salary").encode() + b"\n" + row("E-1").encode() + b",100\n",
            "Unknown column(s): salary. Known: employee_code, first_name, last_name, date_of_birth, gender, email, "
            "type, effective_date, sum_insured.",
        ),
        ((HEADER + ",email").encode() + b"\n", "Duplicate column(s): email."),
        ("\ufeff".encode("utf-16") + HEADER.encode("utf-16-le"), "The file is UTF-16-encoded; save it as UTF-8 CSV."),
        (
            HEADER.encode() + b"\n" + row("E-1").encode() + b'\nE-2,"Asha,Rao\n',
            "Line 3: a quoted field is never closed.",
        ),
        (b"employee_\xe9code,type\n", "The file must be UTF-8 encoded CSV."),
    ],
    ids=[
        "empty",
        "blank-lines",
        "header-only",
        "blank-rows-only",
        "semicolons",
        "tabs",
        "missing-columns",
        "unknown-column",
        "duplicate-column",
        "utf-16",
        "unclosed-quote",
        "undecodable-header",
    ],
)
def test_a_file_that_cannot_be_read_is_422_on_file_and_writes_nothing(client, policy, content, detail):
    response = upload(client, policy, content)

    assert response.status_code == 422, response.content
    assert response.json()["errors"] == [{"pointer": "/file", "detail": detail}]
    assert nothing_written()


def test_bom_crlf_upper_case_headers_and_quoted_cells_are_read(client, policy):
    content = (
        "\ufeff"
        + HEADER.upper()
        + ",Sum_Insured\r\n"
        + row("E-1")
        + ",300000\r\n"
        + '"E-2","Asha, Jr.","O\'Rao",1990-05-17,F,e2@example.com,Addition,2026-06-01,"250000.50"\r\n'
    ).encode()

    response = upload(client, policy, content)

    assert response.status_code == 202, response.content
    assert (response.json()["accepted"], response.json()["errors"]) == (2, [])
    e2 = Endorsement.objects.get(employee_code="E-2")
    assert (e2.details["first_name"], e2.details["last_name"], e2.sum_insured) == ("Asha, Jr.", "O'Rao", 250_000_50)
    assert e2.details["gender"] == "female"


def test_blank_rows_are_skipped_and_not_counted_and_errors_name_row_and_line(client, policy):
    content = "\n".join(
        [
            HEADER,
            row("E-1"),  # line 2, row 1
            ",,,,,,,",  # line 3: spreadsheet artefact
            "",  # line 4
            row("E-2", date_of_birth="1990-02-30"),  # line 5, row 2
            " , ,,,,,, ",  # line 6
            row("E-3"),  # line 7, row 3
        ]
    ).encode()

    response = upload(client, policy, content)

    body = response.json()
    assert (body["total_rows"], body["accepted"], body["rejected"]) == (3, 2, 1)
    assert body["errors"] == [
        {"row": 2, "line": 5, "field": "date_of_birth", "detail": "1990-02-30 is not a real date."}
    ]
    assert accepted_codes(body["id"]) == {"E-1", "E-3"}


def test_row_faults_reject_only_their_row(client, policy):
    lines = [
        HEADER + ",sum_insured",
        row("E-1") + ",",  # line 2, row 1: fine
        row("E-2") + ",100,extra",  # line 3, row 2: a cell too many
        ",".join(row("E-3").split(",")[:5]),  # line 4, row 3: too few cells
        row("E-4"),  # line 5, row 4: the optional last cell may be left off
        row("E-5").replace("Asha", '"As"ha'),  # line 6, row 5: text after a closing quote
        row("E-6", first_name='"Line\nbreak"'),  # lines 7–8, row 6: a line break in a name
        row("E-7"),  # line 9, row 7
    ]
    content = "\n".join(lines).encode()
    content = content.replace(b"E-4,Asha", b"E-4,Ash\xe9")  # row 4: Latin-1 byte in first_name

    response = upload(client, policy, content)

    body = response.json()
    assert response.status_code == 202, response.content
    assert (body["total_rows"], body["accepted"], body["rejected"]) == (7, 2, 5)
    assert [(e["row"], e["line"], e["field"]) for e in body["errors"]] == [
        (2, 3, "row"),
        (3, 4, "row"),
        (4, 5, "first_name"),
        (5, 6, "row"),
        (6, 7, "first_name"),
    ]
    assert body["errors"][0]["detail"] == "This row has 10 cells; the header has 9."
    assert body["errors"][1]["detail"] == "This row has 5 cells; the header has 9."
    assert body["errors"][2]["detail"] == "Not valid UTF-8; save the file as UTF-8 CSV."
    assert body["errors"][4]["detail"] == "Must not contain control characters."
    assert accepted_codes(body["id"]) == {"E-1", "E-7"}


def test_more_than_50000_rows_is_422_and_exactly_50000_is_read(client, policy):
    from apps.endorsements.parsing import read_csv

    body = "\n".join(row(f"E-{i}") for i in range(MAX_ROWS)).encode()
    assert len(read_csv(HEADER.encode() + b"\n" + body)) == MAX_ROWS

    response = upload(client, policy, HEADER.encode() + b"\n" + body + b"\n" + row("E-last").encode())

    assert response.status_code == 422
    assert response.json()["errors"] == [{"pointer": "/file", "detail": f"At most {MAX_ROWS} rows per batch."}]
    assert nothing_written()
