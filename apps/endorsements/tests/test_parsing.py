"""One parser for single requests, JSON rows and CSV rows: shapes and per-field errors."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.common.text import EMAIL_VALIDATOR
from apps.endorsements.parsing import _PLAIN_EMAIL_RE, ParseErrors, draft_from_csv_row, draft_from_request, read_csv


def test_addition_request_becomes_a_draft_with_member_details():
    draft = draft_from_request(
        {
            "type": "addition",
            "effective_date": "2026-05-01",
            "sum_insured": "300000.00",
            "employee": {
                "employee_code": "E-1",
                "first_name": "Asha",
                "last_name": "Rao",
                "date_of_birth": "1990-05-17",
                "gender": "Female",
                "email": "asha@example.com",
            },
        }
    )

    assert draft.type == "addition"
    assert draft.employee_code == "E-1"
    assert draft.sum_insured == 300_000_00
    assert draft.details == {
        "first_name": "Asha",
        "last_name": "Rao",
        "date_of_birth": date(1990, 5, 17),
        "gender": "female",
        "email": "asha@example.com",
    }


def test_every_bad_field_is_reported_with_its_path():
    with pytest.raises(ParseErrors) as exc:
        draft_from_request(
            {
                "type": "addition",
                "effective_date": "01/05/2026",
                "sum_insured": 12.5,
                "employee": {
                    "employee_code": "",
                    "first_name": "A",
                    "date_of_birth": "1990-13-01",
                    "gender": "x",
                    "email": "not-an-email",
                },
            }
        )

    assert {field for field, _ in exc.value.errors} == {
        "effective_date",
        "sum_insured",
        "employee.employee_code",
        "employee.last_name",
        "employee.date_of_birth",
        "employee.gender",
        "employee.email",
    }


def test_correction_needs_changes_and_refuses_unknown_fields():
    with pytest.raises(ParseErrors) as exc:
        draft_from_request(
            {
                "type": "correction",
                "effective_date": "2026-05-01",
                "employee_code": "E-1",
                "changes": {"employee_code": "E-2"},
            }
        )

    assert exc.value.errors == [("changes.employee_code", "This field cannot be corrected.")]


def test_correction_of_sum_insured_only():
    draft = draft_from_request(
        {
            "type": "correction",
            "effective_date": "2026-05-01",
            "employee_code": "E-1",
            "changes": {"sum_insured": "750000.00"},
        }
    )

    assert (draft.details, draft.sum_insured) == ({}, 750_000_00)


def test_csv_rows_map_to_the_request_shapes():
    rows = read_csv(
        b"employee_code,first_name,last_name,date_of_birth,gender,email,type,effective_date,sum_insured\n"
        b"E-1,Asha,Rao,1990-05-17,female,a@example.com,addition,2026-05-01,\n"
        b"E-2,,,,,,deletion,2026-05-01,\n"
        b"E-3,,Iyer,,,,correction,2026-05-01,600000\n"
    )

    drafts = [draft_from_csv_row(r.cells) for r in rows]

    assert [d.type for d in drafts] == ["addition", "deletion", "correction"]
    assert drafts[0].sum_insured is None  # the policy default applies later
    assert drafts[2].details == {"last_name": "Iyer"}
    assert drafts[2].sum_insured == 600_000_00


def test_csv_with_missing_columns_is_refused_whole():
    with pytest.raises(ParseErrors, match="Missing column"):
        read_csv(b"employee_code,type\nE-1,addition\n")


@settings(deadline=None)  # the validator compiles its regular expressions on first use
@given(st.from_regex(_PLAIN_EMAIL_RE, fullmatch=True).filter(lambda e: len(e) <= 254 and e.index("@") <= 64))
def test_the_plain_e_mail_fast_path_accepts_nothing_djangos_validator_refuses(email):
    EMAIL_VALIDATOR(email)  # raises ValidationError if the fast path were wider than the validator


@pytest.mark.parametrize(
    "email",
    ["a@b.c", "dev..sen@example.com", "x@localhost", ".a@x.com", "a@-x.com", "a@x.c0m", "a" * 65 + "@example.com"],
)
def test_addresses_outside_the_fast_path_still_meet_the_validator(email):
    with pytest.raises(ParseErrors) as exc:
        draft_from_request(
            {
                "type": "correction",
                "effective_date": "2026-05-01",
                "employee_code": "E-1",
                "changes": {"email": email},
            }
        )

    assert exc.value.errors == [("changes.email", "Enter a valid e-mail address.")]
