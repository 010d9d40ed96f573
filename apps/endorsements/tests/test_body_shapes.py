"""Endorsement and batch bodies: a member of the wrong JSON type says which type it must be, and every field error
of one body comes back in one answer — the age rule included (issue: request bodies, parts 2 and 3).

The wrong-type cases are generated from the parser's tables (`FIELDS_OF_TYPE`, `COMPOUND_MEMBERS`), so a member
added to either is walked without a new line here."""

from __future__ import annotations

import io
from datetime import date
from typing import Any

import pytest
from django.utils import timezone

from apps.endorsements.api.views import FILE_MESSAGE
from apps.endorsements.models import EndorsementType
from apps.endorsements.parsing import (
    COMPOUND_MEMBERS,
    FIELDS_OF_TYPE,
    GENDER_MESSAGE,
    ParseErrors,
    draft_from_csv_row,
    draft_from_request,
)
from apps.endorsements.tests.factories import PolicyFactory, addition, correction, deletion
from apps.endorsements.tests.test_bad_input import _written, post_json
from apps.endorsements.validation import AGE_MESSAGE

pytestmark = pytest.mark.django_db

TODAY = date(2026, 6, 1)
#: One value of each JSON type; a member is walked with every one that is not of its own type (null is "absent").
JSON_VALUES: dict[type, Any] = {str: "E-312", int: 5, float: 1.5, bool: True, list: [], dict: {}}


def _wrong_values(expected: type) -> list[Any]:
    return [value for kind, value in JSON_VALUES.items() if kind is not expected]


def _body(kind: str) -> dict[str, Any]:
    """A valid body of `kind` (without employer/policy), from the factories."""
    policy = type("P", (), {"employer_id": 1, "pk": 1})()
    body = {
        EndorsementType.ADDITION: addition(policy, "E-312", effective=TODAY),
        EndorsementType.DELETION: deletion(policy, "E-312", effective=TODAY),
        EndorsementType.CORRECTION: correction(policy, "E-312", effective=TODAY, last_name="Iyer"),
    }[EndorsementType(kind)]
    return {k: v for k, v in body.items() if k not in ("employer", "policy")}


MEMBER_CASES = [
    (kind.value, name, value)
    for kind, fields in FIELDS_OF_TYPE.items()
    for name in sorted(fields & COMPOUND_MEMBERS.keys())
    for value in _wrong_values(COMPOUND_MEMBERS[name][0])
]
_IDS = [f"{k}-{n}-{type(v).__name__}" for k, n, v in MEMBER_CASES]


def test_the_table_walks_every_object_member_of_every_body_type():
    assert {(k, n) for k, n, _ in MEMBER_CASES} == {("addition", "employee"), ("correction", "changes")}
    assert len(MEMBER_CASES) == 2 * (len(JSON_VALUES) - 1)


@pytest.mark.parametrize(("kind", "name", "value"), MEMBER_CASES, ids=_IDS)
def test_a_member_of_the_wrong_json_type_says_which_type_it_must_be(kind, name, value):
    body = {**_body(kind), name: value}

    with pytest.raises(ParseErrors) as exc:
        draft_from_request(body)

    assert exc.value.errors == [(name, COMPOUND_MEMBERS[name][1])]


@pytest.mark.parametrize(
    ("kind", "name", "value", "message"),
    [
        ("addition", "employee", None, "Member details are required for an addition."),
        ("correction", "changes", None, "A correction needs at least one change."),
        ("correction", "changes", {}, "A correction needs at least one change."),
    ],
)
def test_an_absent_or_empty_member_keeps_its_required_message(kind, name, value, message):
    body = {k: v for k, v in _body(kind).items() if k != name}
    if value is not None:
        body[name] = value

    with pytest.raises(ParseErrors) as exc:
        draft_from_request(body)

    assert exc.value.errors == [(name, message)]


# --- through the API: nothing written on a rejection --------------------------------------------------------------


@pytest.fixture
def policy(time_machine):
    time_machine.move_to(timezone.make_aware(timezone.datetime(2026, 6, 1, 10, 0)), tick=False)
    return PolicyFactory()


@pytest.fixture
def client(make_key, policy):
    return make_key(partner=policy.employer.partner, employers=[policy.employer])


def _errors(response: Any) -> list[tuple[str, str]]:
    assert response.status_code == 422, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    return [(e["pointer"], e["detail"]) for e in response.json()["errors"]]


@pytest.mark.parametrize(("kind", "name", "value"), MEMBER_CASES, ids=_IDS)
def test_a_single_request_with_a_member_of_the_wrong_type_is_422_naming_it(client, policy, kind, name, value):
    body = {**_body(kind), "employer": policy.employer_id, "policy": policy.pk, name: value}
    before = _written()

    response = post_json(client, "/api/v1/endorsements", body)

    assert _errors(response) == [(f"/{name}", COMPOUND_MEMBERS[name][1])]
    assert _written() == before


@pytest.mark.parametrize(("kind", "name", "value"), MEMBER_CASES, ids=_IDS)
def test_a_batch_row_with_a_member_of_the_wrong_type_is_rejected_naming_it(client, policy, kind, name, value):
    rows = [{**_body(kind), name: value}]
    before = _written()

    response = post_json(
        client, "/api/v1/endorsement-batches", {"employer": policy.employer_id, "policy": policy.pk, "rows": rows}
    )

    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (0, 1)
    assert [(e["row"], e["field"], e["detail"]) for e in body["errors"]] == [(1, name, COMPOUND_MEMBERS[name][1])]
    assert _written()[0] == before[0]


@pytest.mark.parametrize("value", _wrong_values(COMPOUND_MEMBERS["rows"][0]), ids=lambda v: type(v).__name__)
def test_batch_rows_of_the_wrong_type_are_422_saying_an_array_is_expected(client, policy, value):
    before = _written()

    response = post_json(
        client, "/api/v1/endorsement-batches", {"employer": policy.employer_id, "policy": policy.pk, "rows": value}
    )

    assert _errors(response) == [("/rows", COMPOUND_MEMBERS["rows"][1])]
    assert _written() == before


@pytest.mark.parametrize("value", _wrong_values(COMPOUND_MEMBERS["row"][0]), ids=lambda v: type(v).__name__)
def test_a_batch_row_of_the_wrong_type_is_rejected_saying_an_object_is_expected(client, policy, value):
    rows = [_body("addition"), value]

    response = post_json(
        client, "/api/v1/endorsement-batches", {"employer": policy.employer_id, "policy": policy.pk, "rows": rows}
    )

    assert response.status_code == 202, response.content
    body = response.json()
    assert (body["accepted"], body["rejected"]) == (1, 1)
    assert [(e["row"], e["field"], e["detail"]) for e in body["errors"]] == [(2, "row", COMPOUND_MEMBERS["row"][1])]


@pytest.mark.parametrize("value", ["census.csv", ["a,b"], {"name": "census.csv"}, 5])
def test_a_batch_file_that_is_not_a_file_part_is_422_on_file(client, policy, value):
    before = _written()

    response = post_json(
        client, "/api/v1/endorsement-batches", {"employer": policy.employer_id, "policy": policy.pk, "file": value}
    )

    assert _errors(response) == [("/file", FILE_MESSAGE)]
    assert _written() == before


def test_a_batch_file_sent_as_a_form_field_is_422_on_file(client, policy):
    before = _written()

    response = client.client.post(
        "/api/v1/endorsement-batches",
        {"employer": policy.employer_id, "policy": policy.pk, "file": "type,effective_date"},
        format="multipart",
    )

    assert _errors(response) == [("/file", FILE_MESSAGE)]
    assert _written() == before


# --- every field error of one body in one answer ------------------------------------------------------------------


def test_an_age_out_of_range_is_named_with_the_other_field_errors_in_one_response(client, policy):
    body = addition(policy, "E-1", effective=TODAY, dob="1890-01-01")
    body["employee"] |= {"gender": "other?", "email": "a@localhost"}
    before = _written()

    response = post_json(client, "/api/v1/endorsements", body)

    assert _errors(response) == [
        ("/employee/gender", GENDER_MESSAGE),
        ("/employee/email", "Enter a valid e-mail address."),
        ("/employee/date_of_birth", AGE_MESSAGE),
    ]
    assert _written() == before


def test_a_batch_row_and_a_csv_row_name_the_age_with_the_other_field_errors():
    row = _body("addition")
    row["employee"] |= {"date_of_birth": "1890-01-01", "gender": "other?"}
    csv_row = {**row["employee"], "type": "addition", "effective_date": TODAY.isoformat()}

    with pytest.raises(ParseErrors) as from_json:
        draft_from_request(row, envelope=frozenset())
    with pytest.raises(ParseErrors) as from_csv:
        draft_from_csv_row(csv_row)

    expected = [("employee.gender", GENDER_MESSAGE), ("employee.date_of_birth", AGE_MESSAGE)]
    assert from_json.value.errors == expected
    assert from_csv.value.errors == expected


@pytest.mark.parametrize(
    ("dob", "accepted"),
    [
        ("1925-06-02", True),  # 100 on the effective date, 101 the day after
        ("1925-06-01", False),  # 101 on the effective date
        ("2026-06-01", True),  # born on the effective date: 0
        ("2026-06-02", False),  # born after it
    ],
)
@pytest.mark.parametrize("kind", ["addition", "correction"])
def test_the_age_rule_accepts_exactly_ages_0_to_100_on_the_effective_date(kind, dob, accepted):
    body = _body(kind)
    target = body["employee"] if kind == "addition" else body["changes"]
    target["date_of_birth"] = dob
    field = "employee.date_of_birth" if kind == "addition" else "changes.date_of_birth"

    if accepted:
        assert draft_from_request(body, envelope=frozenset()).details["date_of_birth"] == date.fromisoformat(dob)
    else:
        with pytest.raises(ParseErrors) as exc:
            draft_from_request(body, envelope=frozenset())
        assert exc.value.errors == [(field, AGE_MESSAGE)]


def test_an_age_is_not_judged_against_an_effective_date_that_did_not_parse():
    body = _body("addition")
    body["effective_date"] = "01/06/2026"
    body["employee"]["date_of_birth"] = "1890-01-01"

    with pytest.raises(ParseErrors) as exc:
        draft_from_request(body, envelope=frozenset())

    assert exc.value.errors == [("effective_date", "Enter a date as YYYY-MM-DD.")]


def test_a_correction_of_a_member_not_covered_with_an_age_out_of_range_is_refused_on_the_age(client, policy):
    body = correction(policy, "NOBODY", effective=TODAY, date_of_birth="1890-01-01")
    before = _written()

    response = post_json(client, "/api/v1/endorsements", body)

    assert _errors(response) == [("/changes/date_of_birth", AGE_MESSAGE)]
    assert _written() == before


def test_the_csv_upload_reports_the_age_on_its_column_with_the_others(client, policy):
    header = "employee_code,first_name,last_name,date_of_birth,gender,email,type,effective_date\r\n"
    content = header + f"C-1,Asha,Rao,1890-01-01,other?,c1@example.com,addition,{TODAY.isoformat()}\r\n"
    file = io.BytesIO(content.encode())
    file.name = "census.csv"

    response = client.client.post(
        "/api/v1/endorsement-batches",
        {"employer": policy.employer_id, "policy": policy.pk, "file": file},
        format="multipart",
    )

    assert response.status_code == 202, response.content
    assert [(e["row"], e["field"], e["detail"]) for e in response.json()["errors"]] == [
        (1, "date_of_birth", AGE_MESSAGE),
        (1, "gender", GENDER_MESSAGE),
    ]
