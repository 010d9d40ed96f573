"""Bad input never costs a 5xx or a valid row (issue 8, kinds 1, 3, 5, 6): one table, generated from the request
serializers (every field of a single request, of a JSON batch row and every CSV column), walked through the real
API: a single request is 422 naming exactly that field and writes nothing; a batch is 202 with exactly that row
rejected (`{row, line, field, detail}`) and every other row accepted.

A field added to `EndorsementCreateInputSerializer` (or its nested member/changes serializers) or a column added
to the CSV header is covered without a new line here: its bad values come from its serializer field class.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from django.utils import timezone
from rest_framework import serializers

from apps.audit.models import AuditEvent
from apps.common.actors import Actor
from apps.common.fields import MoneyField
from apps.employers.services import coverage_start, employee_upsert
from apps.endorsements.api.serializers import EndorsementCreateInputSerializer
from apps.endorsements.models import Endorsement, EndorsementBatch
from apps.endorsements.parsing import CSV_COLUMNS, CSV_OPTIONAL, csv_field_name
from apps.endorsements.tests.factories import PolicyFactory, addition, correction, deletion
from apps.outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db

TODAY = date(2026, 6, 1)
CONTROL = ["Ra\u0000vi", "Ra\u0007vi", "Ra\u009fvi", "Ra\ud800vi", "Ra\nvi"]
# Bad values per kind of field; JSON-only ones (numbers, lists, objects) are left out of CSV cells.
BAD: dict[type, list[Any]] = {
    serializers.EmailField: ["a@b.c", "dev..sen@example.com", "x@localhost", "a\u0000b@example.com", "a b@x.com", 5],
    serializers.CharField: [*CONTROL, "x" * 101, 12345, ["x"], {"x": 1}],
    serializers.DateField: ["1990-02-30", "2026-13-01", "01/05/2026", "20260501", "1990-02-3\u0000", 19900101],
    serializers.ChoiceField: ["unknown", "M\u0000", 1, ["m"]],
    MoneyField: [
        "1e30",
        "1" * 30,
        "1e3",
        "1_000",
        "1,000",
        "NaN",
        "Infinity",
        "-5",
        "0",
        "1.234",
        1.5,
        True,
    ],
    serializers.IntegerField: [10**30, 2**63, "1e30", True, 1.5, -1, 0, "abc", None, "١٢"],
}
# Where a top-level field belongs (SPEC §7 request bodies); nested fields follow their container.
APPLIES = {
    "employee": ["addition"],
    "sum_insured": ["addition"],
    "employee_code": ["deletion", "correction"],
    "changes": ["correction"],
}
APPLIES_DEFAULT = ["addition", "deletion", "correction"]


def _leaves(serializer: serializers.Serializer, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, field in serializer.fields.items():
        if isinstance(field, serializers.Serializer):
            yield from _leaves(field, (*prefix, name))
        else:
            yield (*prefix, name), field


def _bad_values(field: Any) -> list[Any]:
    for kind in (serializers.EmailField, serializers.ChoiceField, MoneyField, serializers.DateField):
        if isinstance(field, kind):
            return BAD[kind]
    for kind in (serializers.CharField, serializers.IntegerField):
        if isinstance(field, kind):
            return BAD[kind]
    raise AssertionError(f"no bad values for {type(field).__name__}: add them to BAD")


def _cases() -> list[tuple[str, tuple[str, ...], Any]]:
    cases = []
    for path, field in _leaves(EndorsementCreateInputSerializer()):
        for kind in APPLIES.get(path[0], APPLIES_DEFAULT):
            for value in _bad_values(field):
                if path == ("employee", "email") and value is None:
                    continue
                cases.append((kind, path, value))
    return cases


CASES = _cases()


def _body(policy: Any, kind: str, code: str) -> dict[str, Any]:
    if kind == "addition":
        return addition(policy, code, effective=TODAY)
    if kind == "deletion":
        return deletion(policy, code, effective=TODAY)
    return correction(policy, code, effective=TODAY, last_name="Iyer")


def _with(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    body = {k: (dict(v) if isinstance(v, dict) else v) for k, v in body.items()}
    target = body
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value
    return body


@pytest.fixture
def policy(time_machine):
    time_machine.move_to(timezone.make_aware(timezone.datetime(2026, 6, 1, 10, 0)), tick=False)
    return PolicyFactory()


@pytest.fixture
def client(make_key, policy):
    return make_key(partner=policy.employer.partner, employers=[policy.employer])


def _cover(policy: Any, *codes: str) -> None:
    """Members to delete or correct: covered directly (the pipeline is not the subject here)."""
    for code in codes:
        employee, _ = employee_upsert(
            employer_id=policy.employer_id,
            employee_code=code,
            details={"first_name": "A", "last_name": "B", "date_of_birth": date(1990, 1, 1), "gender": "male"},
        )
        coverage_start(
            employee=employee,
            policy=policy,
            sum_insured=500_000_00,
            start_date=date(2026, 5, 1),
            endorsement_id=None,
            actor=Actor.system("tests"),
        )


def post_json(client: Any, path: str, body: Any) -> Any:
    """POST as a client sends it: ASCII JSON, so a lone surrogate travels as its `\\ud800` escape."""
    return client.client.post(path, data=json.dumps(body), content_type="application/json")


def _written() -> tuple[int, int, int, int]:
    return (
        Endorsement.objects.count(),
        EndorsementBatch.objects.count(),
        OutboxMessage.objects.filter(topic__startswith="endorsements").count(),
        AuditEvent.objects.filter(object_type__startswith="endorsement").count(),
    )


def test_the_table_covers_every_field_of_the_request_serializers():
    paths = {path for _, path, _ in CASES}
    assert {path for path, _ in _leaves(EndorsementCreateInputSerializer())} == paths
    assert ("employee", "first_name") in paths
    assert ("changes", "sum_insured") in paths


@pytest.mark.parametrize(("kind", "path", "value"), CASES, ids=[f"{k}-{'.'.join(p)}-{v!r}"[:80] for k, p, v in CASES])
def test_a_bad_field_in_a_single_request_is_422_on_that_field_and_writes_nothing(client, policy, kind, path, value):
    body = _with(_body(policy, kind, "E-1"), path, value)
    before = _written()

    response = post_json(client, "/api/v1/endorsements", body)

    assert response.status_code == 422, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    assert {e["pointer"] for e in response.json()["errors"]} == {"/" + "/".join(path)}
    assert _written() == before


BATCH_CASES = [(k, p, v) for k, p, v in CASES if p[0] not in ("employer", "policy")]


@pytest.mark.parametrize(
    ("kind", "path", "value"), BATCH_CASES, ids=[f"{k}-{'.'.join(p)}-{v!r}"[:80] for k, p, v in BATCH_CASES]
)
def test_a_bad_field_in_a_json_batch_row_rejects_that_row_only(client, policy, kind, path, value):
    if kind != "addition":
        _cover(policy, "K-1", "K-2", "K-3")
    rows = [
        {k: v for k, v in _body(policy, kind, code).items() if k not in ("employer", "policy")}
        for code in ("K-1", "K-2", "K-3")
    ]
    rows[1] = _with(rows[1], path, value)
    endorsements_before = Endorsement.objects.count()

    response = post_json(
        client, "/api/v1/endorsement-batches", {"employer": policy.employer_id, "policy": policy.pk, "rows": rows}
    )

    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["total_rows"], body["accepted"], body["rejected"]) == (3, 2, 1)
    assert [(e["row"], e["field"], e["line"]) for e in body["errors"]] == [(2, ".".join(path), None)]
    assert Endorsement.objects.count() == endorsements_before + 2
    assert set(Endorsement.objects.filter(batch_id=body["id"]).values_list("employee_code", flat=True)) == {
        "K-1",
        "K-3",
    }


CSV_HEADER = CSV_COLUMNS + CSV_OPTIONAL
_SERIALIZER_FIELD = {path[-1]: field for path, field in _leaves(EndorsementCreateInputSerializer())}
CSV_CASES = [
    (column, value)
    for column in CSV_HEADER
    for value in _bad_values(_SERIALIZER_FIELD[column])
    if isinstance(value, str) and value.strip()
]


def _csv(rows: list[dict[str, str]]) -> bytes:
    out = io.StringIO(newline="")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_HEADER)
    for row in rows:
        writer.writerow([row.get(c, "") for c in CSV_HEADER])
    return out.getvalue().encode("utf-8", errors="surrogatepass")


def _csv_row(code: str) -> dict[str, str]:
    return {
        "employee_code": code,
        "first_name": "Asha",
        "last_name": "Rao",
        "date_of_birth": "1990-05-17",
        "gender": "F",
        "email": f"{code.lower()}@example.com",
        "type": "addition",
        "effective_date": TODAY.isoformat(),
        "sum_insured": "300000.00",
    }


def upload(client: Any, policy: Any, content: bytes, **extra: Any) -> Any:
    file = io.BytesIO(content)
    file.name = "census.csv"
    return client.client.post(
        "/api/v1/endorsement-batches",
        {"employer": policy.employer_id, "policy": policy.pk, "file": file},
        format="multipart",
        **extra,
    )


@pytest.mark.parametrize(("column", "value"), CSV_CASES, ids=[f"{c}-{v!r}"[:60] for c, v in CSV_CASES])
def test_a_bad_csv_cell_rejects_that_row_with_its_line_and_keeps_the_others(client, policy, column, value):
    rows = [_csv_row(code) for code in ("C-1", "C-2", "C-3")]
    rows[1][column] = value

    response = upload(client, policy, _csv(rows))

    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["total_rows"], body["accepted"], body["rejected"]) == (3, 2, 1)
    assert [(e["row"], e["line"], e["field"]) for e in body["errors"]] == [(2, 3, csv_field_name(column))]
    assert set(Endorsement.objects.filter(batch_id=body["id"]).values_list("employee_code", flat=True)) == {
        "C-1",
        "C-3",
    }


@pytest.mark.parametrize("field", ["employer", "policy"])
@pytest.mark.parametrize("value", BAD[serializers.IntegerField], ids=repr)
def test_batch_ids_beyond_the_column_or_not_ids_are_422_on_the_field(client, policy, field, value):
    rows = [{k: v for k, v in addition(policy, "E-1", effective=TODAY).items() if k not in ("employer", "policy")}]
    body = {"employer": policy.employer_id, "policy": policy.pk, "rows": rows, field: value}
    before = _written()

    response = client.post("/api/v1/endorsement-batches", body)

    assert response.status_code == 422, response.content
    assert [e["pointer"] for e in response.json()["errors"]] == [f"/{field}"]
    assert _written() == before


@pytest.mark.parametrize("field", ["employer", "policy"])
@pytest.mark.parametrize("value", ["1e30", str(2**63), "-1", "1.5", "", "x"], ids=repr)
def test_csv_upload_ids_in_form_fields_are_422_on_the_field(client, policy, field, value):
    file = io.BytesIO(_csv([_csv_row("C-1")]))
    file.name = "census.csv"
    form = {"employer": str(policy.employer_id), "policy": str(policy.pk), "file": file, field: value}

    response = client.client.post("/api/v1/endorsement-batches", form, format="multipart")

    assert response.status_code == 422, response.content
    assert [e["pointer"] for e in response.json()["errors"]] == [f"/{field}"]
    assert _written() == (0, 0, 0, 0)


@pytest.mark.parametrize("spelling", ["M", "m", "Male", "MALE", "male", " f ", "Female", "O", "other", "Other"])
def test_gender_spellings_of_hr_exports_store_the_canonical_value(client, policy, spelling):
    body = _with(addition(policy, "G-1", effective=TODAY), ("employee", "gender"), spelling)

    response = client.post("/api/v1/endorsements", body)

    assert response.status_code == 202, response.content
    expected = {"m": "male", "f": "female", "o": "other"}[spelling.strip()[0].lower()]
    assert Endorsement.objects.get().details["gender"] == expected


def test_an_impossible_date_says_it_is_not_a_real_date(client, policy):
    body = _with(addition(policy, "D-1", effective=TODAY), ("employee", "date_of_birth"), "1990-02-30")

    response = client.post("/api/v1/endorsements", body)

    assert response.json()["errors"] == [
        {"pointer": "/employee/date_of_birth", "detail": "1990-02-30 is not a real date."}
    ]


@pytest.mark.parametrize("path", ["/api/v1/endorsements/{}", "/api/v1/endorsement-batches/{}"])
@pytest.mark.parametrize("value", [10**30, 2**63, 2**63 - 1])
def test_ids_beyond_the_column_in_a_path_are_404(client, path, value):
    response = client.get(path.format(value))

    assert response.status_code == 404


@pytest.mark.parametrize("name", ["employer", "batch"])
@pytest.mark.parametrize("value", ["1e30", str(10**30), "1.5", "-1", "0", "x"])
def test_ids_beyond_the_column_in_a_filter_are_422(client, name, value):
    response = client.get("/api/v1/endorsements", {name: value})

    assert response.status_code == 422, response.content
    assert [e["pointer"] for e in response.json()["errors"]] == [f"/{name}"]
