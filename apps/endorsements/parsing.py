"""Turn a request body or a batch row into an `EndorsementDraft`, or field errors.

One parser serves the single-endorsement API, JSON batches and CSV batches, so a rule is written once. It is
hand-written rather than a DRF serializer per row because a 50,000-row batch must parse in well under a second.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator, Mapping
from datetime import date
from typing import Any

from apps.common.money import MoneyError, to_minor
from apps.employers.models import Gender
from apps.endorsements.models import EndorsementType
from apps.endorsements.validation import EndorsementDraft

CSV_COLUMNS = ("employee_code", "first_name", "last_name", "date_of_birth", "gender", "email", "type", "effective_date")
CSV_OPTIONAL = ("sum_insured",)
MAX_ROWS = 50_000
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CODE_RE = re.compile(r"^[A-Za-z0-9._/-]{1,64}$")
MAX_SUM_INSURED = 10**12  # paise: ₹1,000 crore


class ParseErrors(Exception):
    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {d}" for f, d in errors))
        self.errors = errors


def _date(value: Any, field: str, errors: list[tuple[str, str]]) -> date | None:
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or not value.strip():
        errors.append((field, "A date (YYYY-MM-DD) is required."))
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        errors.append((field, "Enter a date as YYYY-MM-DD."))
        return None


def _text(
    value: Any, field: str, errors: list[tuple[str, str]], *, max_length: int = 100, required: bool = True
) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            errors.append((field, "This field is required."))
        return None
    if not isinstance(value, str):
        errors.append((field, "Must be a string."))
        return None
    value = value.strip()
    if len(value) > max_length:
        errors.append((field, f"At most {max_length} characters."))
        return None
    return value


def _member_fields(
    source: Mapping[str, Any], prefix: str, errors: list[tuple[str, str]], *, required: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("first_name", "last_name"):
        value = _text(source.get(name), f"{prefix}{name}", errors, required=required)
        if value is not None:
            out[name] = value
    if required or source.get("date_of_birth") not in (None, ""):
        dob = _date(source.get("date_of_birth"), f"{prefix}date_of_birth", errors)
        if dob is not None:
            out["date_of_birth"] = dob
    gender = source.get("gender")
    if required or gender not in (None, ""):
        if not isinstance(gender, str) or gender.strip().lower() not in Gender.values:
            errors.append((f"{prefix}gender", f"Must be one of: {', '.join(Gender.values)}."))
        else:
            out["gender"] = gender.strip().lower()
    email = source.get("email")
    if email not in (None, ""):
        if not isinstance(email, str) or len(email) > 254 or not _EMAIL_RE.match(email.strip()):
            errors.append((f"{prefix}email", "Enter a valid e-mail address."))
        else:
            out["email"] = email.strip()
    elif required:
        out["email"] = ""
    return out


def _sum_insured(value: Any, field: str, errors: list[tuple[str, str]]) -> int | None:
    if value in (None, ""):
        return None
    if isinstance(value, (bool, float)):
        errors.append((field, "Enter an amount as a decimal string with at most two places."))
        return None
    try:
        minor = to_minor(value)
    except MoneyError:
        errors.append((field, "Enter an amount as a decimal string with at most two places."))
        return None
    if not 0 < minor <= MAX_SUM_INSURED:
        errors.append((field, "Must be greater than 0 and at most 10000000000.00."))
        return None
    return minor


def draft_from_request(body: Mapping[str, Any]) -> EndorsementDraft:
    """A single-request body (or a JSON batch row) → draft. Raises ParseErrors with JSON-pointer-like fields."""
    errors: list[tuple[str, str]] = []
    kind = body.get("type")
    if kind not in EndorsementType.values:
        raise ParseErrors([("type", f"Must be one of: {', '.join(EndorsementType.values)}.")])
    effective_date = _date(body.get("effective_date"), "effective_date", errors)
    sum_insured = _sum_insured(body.get("sum_insured"), "sum_insured", errors)
    details: dict[str, Any] = {}
    if kind == EndorsementType.ADDITION:
        employee = body.get("employee")
        if not isinstance(employee, Mapping):
            errors.append(("employee", "Member details are required for an addition."))
            employee_code = None
        else:
            employee_code = _code(employee.get("employee_code"), "employee.employee_code", errors)
            details = _member_fields(employee, "employee.", errors, required=True)
    else:
        employee_code = _code(body.get("employee_code"), "employee_code", errors)
        if kind == EndorsementType.CORRECTION:
            changes = body.get("changes")
            if not isinstance(changes, Mapping) or not changes:
                errors.append(("changes", "A correction needs at least one change."))
            else:
                unknown = set(changes) - {"first_name", "last_name", "date_of_birth", "gender", "email", "sum_insured"}
                for name in sorted(unknown):
                    errors.append((f"changes.{name}", "This field cannot be corrected."))
                details = _member_fields(changes, "changes.", errors, required=False)
                if "sum_insured" in changes:
                    sum_insured = _sum_insured(changes.get("sum_insured"), "changes.sum_insured", errors)
                    if sum_insured is None and not any(f == "changes.sum_insured" for f, _ in errors):
                        errors.append(("changes.sum_insured", "Must be greater than 0."))
        elif body.get("sum_insured") not in (None, ""):
            errors.append(("sum_insured", "A deletion has no sum insured."))
    if errors:
        raise ParseErrors(errors)
    assert employee_code is not None
    assert effective_date is not None
    return EndorsementDraft(
        type=kind, employee_code=employee_code, effective_date=effective_date, details=details, sum_insured=sum_insured
    )


def _code(value: Any, field: str, errors: list[tuple[str, str]]) -> str | None:
    code = _text(value, field, errors, max_length=64)
    if code is not None and not _CODE_RE.match(code):
        errors.append((field, "Letters, digits and . _ / - only."))
        return None
    return code


def draft_from_csv_row(row: Mapping[str, str]) -> EndorsementDraft:
    """A CSV row (flat columns) → the same shape as a request, then `draft_from_request`."""
    kind = (row.get("type") or "").strip().lower()
    member = {
        k: row.get(k, "") for k in ("employee_code", "first_name", "last_name", "date_of_birth", "gender", "email")
    }
    body: dict[str, Any] = {"type": kind, "effective_date": row.get("effective_date", "")}
    if kind == EndorsementType.ADDITION:
        body["employee"] = member
        body["sum_insured"] = row.get("sum_insured") or None
    elif kind == EndorsementType.DELETION:
        body["employee_code"] = member["employee_code"]
    else:
        body["employee_code"] = member["employee_code"]
        changes = {k: v for k, v in member.items() if k != "employee_code" and v not in (None, "")}
        if row.get("sum_insured"):
            changes["sum_insured"] = row["sum_insured"]
        body["changes"] = changes
    draft = draft_from_request(body)
    return draft


def csv_field_name(field: str) -> str:
    """Request-shaped error fields → the CSV column a user can find."""
    return field.split(".")[-1]


def read_csv(content: bytes) -> tuple[list[dict[str, str]], list[str]]:
    """Rows and the header. Raises ParseErrors for an unreadable file or missing columns."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ParseErrors([("file", "The file must be UTF-8 encoded CSV.")])
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in (reader.fieldnames or [])]
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise ParseErrors([("file", f"Missing column(s): {', '.join(missing)}.")])
    unknown = [c for c in header if c not in CSV_COLUMNS + CSV_OPTIONAL]
    if unknown:
        raise ParseErrors([("file", f"Unknown column(s): {', '.join(unknown)}.")])
    reader.fieldnames = header
    rows: list[dict[str, str]] = []
    for row in _limited(reader):
        rows.append({k: (v or "").strip() for k, v in row.items() if k is not None})
    return rows, header


def _limited(reader: csv.DictReader) -> Iterator[dict[str, str]]:  # type: ignore[type-arg]
    for count, row in enumerate(reader, start=1):
        if count > MAX_ROWS:
            raise ParseErrors([("file", f"At most {MAX_ROWS} rows per batch.")])
        yield row
