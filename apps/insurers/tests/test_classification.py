from __future__ import annotations

import pytest

from apps.insurers.contracts import RejectionClass
from apps.insurers.services import classify_insurer_error


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("Member already exists on policy POL-1", RejectionClass.DUPLICATE_MEMBER),
        ("DUPLICATE enrolment", RejectionClass.DUPLICATE_MEMBER),
        ("Date of birth mismatch", RejectionClass.DATA_MISMATCH),
        ("Name does not match our records", RejectionClass.DATA_MISMATCH),
        ("Member age exceeds 65", RejectionClass.AGE_LIMIT),
        ("Over-age dependant", RejectionClass.AGE_LIMIT),
        ("Supporting document missing", RejectionClass.DOCUMENTS_REQUIRED),
        ("Documents required: ID proof", RejectionClass.DOCUMENTS_REQUIRED),
        ("Read timed out", RejectionClass.TRANSIENT),
        ("Gateway timeout", RejectionClass.TRANSIENT),
        ("HTTP 503 Service Unavailable", RejectionClass.TRANSIENT),
        ("Policy is lapsed", RejectionClass.UNKNOWN),
        ("Invalid message format on page 2", RejectionClass.UNKNOWN),  # "age" only as a word
        ("", RejectionClass.UNKNOWN),
        # First rule wins: a duplicate that also mentions a mismatch is a duplicate.
        ("Duplicate member: date of birth does not match", RejectionClass.DUPLICATE_MEMBER),
    ],
)
def test_insurer_errors_are_classified_by_keyword(message: str, expected: RejectionClass) -> None:
    assert classify_insurer_error(message) == expected
