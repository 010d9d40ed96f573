"""Turn a request body, a JSON batch row or a CSV row into an `EndorsementDraft`, or field errors (SPEC §7).

One parser serves the single-endorsement API, JSON batches and CSV batches, so a rule is written once and every
field of every source gets it (issue 8, kinds 1, 3, 5, 6):

- text: a string, stripped, bounded, without control characters (`apps.common.text.control_character_error`);
- money: the one API grammar (`apps.common.money.to_minor`, `MONEY_PATTERN`), then the field's range;
- dates: `YYYY-MM-DD` only; a well-formed date that does not exist (`1990-02-30`) says so;
- e-mail: `apps.common.text.EMAIL_VALIDATOR` (Django's, without the `localhost` allow-list);
- gender: the spellings HR exports use (`M`/`F`/`O`, `Male`, `female`, any case) → the canonical value;
- ids (`employer`, `policy`): positive integers within the bigint column's range (`parse_id`).

It is hand-written rather than a DRF serializer per row because a 50,000-row batch must parse in well under a
second. `read_csv` turns the bytes of an upload into rows without ever losing a valid one: a file-level fault
(encoding, delimiter, header, an unclosed quote, too many rows) is one `ParseErrors` on `file`; a row-level
fault (cell count, undecodable bytes, a malformed quote) is that row's error; blank rows are skipped.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from django.core.exceptions import ValidationError

from apps.common.ids import BIGINT_MAX
from apps.common.money import MoneyError, NegativeAmountError, format_minor, to_minor
from apps.common.text import EMAIL_VALIDATOR, MAX_EMAIL_LOCAL_PART, UNKNOWN_FIELD_MESSAGE, control_character_error
from apps.employers.contracts import Gender
from apps.endorsements.models import EndorsementType
from apps.endorsements.validation import AGE_MESSAGE, EndorsementDraft, age_on

CSV_COLUMNS = ("employee_code", "first_name", "last_name", "date_of_birth", "gender", "email", "type", "effective_date")
CSV_OPTIONAL = ("sum_insured",)
MAX_ROWS = 50_000
MAX_SUM_INSURED = 10**12  # paise: ₹1,000 crore
MAX_ID = BIGINT_MAX  # ids are bigint columns (ADR 0015)
MEMBER_TEXT_FIELDS = {"first_name": 100, "last_name": 100}
CORRECTABLE_FIELDS = ("first_name", "last_name", "date_of_birth", "gender", "email", "sum_insured")
# HR exports spell gender many ways; each maps to the stored value (SPEC §7; issue 8, kind 6).
GENDER_SPELLINGS = {
    **{g.value: g.value for g in Gender},
    "m": Gender.MALE.value,
    "f": Gender.FEMALE.value,
    "o": Gender.OTHER.value,
}
GENDER_MESSAGE = "Must be one of: male, female, other (also M, F, O; any case)."
MONEY_MESSAGE = "Enter an amount as a decimal string with at most two places, like 500000.00."
_CODE_RE = re.compile(r"[A-Za-z0-9._/-]{1,64}")
_DATE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_ID_RE = re.compile(r"[1-9][0-9]{0,18}")
# The plain addresses nearly every row carries, in a language strictly inside what `EMAIL_VALIDATOR` accepts
# (dot-atom local part, LDH labels, a letters-only TLD; ASCII only). A match whose local part holds at most 64
# characters (`MAX_EMAIL_LOCAL_PART`) is valid without running Django's validator, which costs ~10× more per
# row; anything else goes through the validator (ADR 0017).
_PLAIN_EMAIL_RE = re.compile(
    r"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*@(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}",
    re.IGNORECASE | re.ASCII,
)
_TYPES = frozenset(EndorsementType.values)
MAX_EMAIL_LENGTH = 254  # RFC 5321 path limit


class ParseErrors(Exception):
    """Field errors of one request or row: `errors` is `[(field path, message)]`, e.g. `("employee.email", …)`."""

    def __init__(self, errors: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{f}: {d}" for f, d in errors))
        self.errors = errors


def parse_id(value: Any) -> int | None:
    """An id from a JSON body (int) or a form field (decimal digits) → int in 1 … 2**63−1, else None.

    Booleans, floats, signs, blanks, non-ASCII digits and anything beyond the bigint column are refused here, so
    no lookup can overflow (issue 8, kind 1: beyond the column's range in a body → 422)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 1 <= value <= MAX_ID else None
    if isinstance(value, str) and _ID_RE.fullmatch(value):
        number = int(value)
        return number if number <= MAX_ID else None
    return None


def _date(value: Any, field: str, errors: list[tuple[str, str]]) -> date | None:
    if isinstance(value, str):
        value = value.strip()
    if value is None or value == "":
        errors.append((field, "A date (YYYY-MM-DD) is required."))
        return None
    if not isinstance(value, str) or not _DATE_RE.fullmatch(value):
        errors.append((field, "Enter a date as YYYY-MM-DD."))
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        errors.append((field, f"{value} is not a real date."))
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
    problem = control_character_error(value)
    if problem:
        errors.append((field, problem))
        return None
    value = value.strip()
    if len(value) > max_length:
        errors.append((field, f"At most {max_length} characters."))
        return None
    return value


def _email(value: Any, field: str, errors: list[tuple[str, str]]) -> str | None:
    email = _text(value, field, errors, max_length=MAX_EMAIL_LENGTH, required=False)
    if email is None or (_PLAIN_EMAIL_RE.fullmatch(email) and email.index("@") <= MAX_EMAIL_LOCAL_PART):
        return email
    try:
        EMAIL_VALIDATOR(email)
    except ValidationError:
        errors.append((field, "Enter a valid e-mail address."))
        return None
    return email


def _gender(value: Any, field: str, errors: list[tuple[str, str]]) -> str | None:
    canonical = GENDER_SPELLINGS.get(value.strip().lower()) if isinstance(value, str) else None
    if canonical is None:
        errors.append((field, GENDER_MESSAGE))
    return canonical


def _member_fields(
    source: Mapping[str, Any], prefix: str, errors: list[tuple[str, str]], *, required: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, max_length in MEMBER_TEXT_FIELDS.items():
        value = _text(source.get(name), f"{prefix}{name}", errors, required=required, max_length=max_length)
        if value is not None:
            out[name] = value
    if required or source.get("date_of_birth") not in (None, ""):
        dob = _date(source.get("date_of_birth"), f"{prefix}date_of_birth", errors)
        if dob is not None:
            out["date_of_birth"] = dob
    if required or source.get("gender") not in (None, ""):
        gender = _gender(source.get("gender"), f"{prefix}gender", errors)
        if gender is not None:
            out["gender"] = gender
    email = _email(source.get("email"), f"{prefix}email", errors)
    if email is not None:
        out["email"] = email
    elif required and not any(f == f"{prefix}email" for f, _ in errors):
        out["email"] = ""
    return out


def _sum_insured(value: Any, field: str, errors: list[tuple[str, str]]) -> int | None:
    if value is None or value == "":
        return None
    range_message = f"Must be greater than 0 and at most {format_minor(MAX_SUM_INSURED)}."
    try:
        minor = to_minor(value)
    except NegativeAmountError:  # "-5" is out of range like "0", not a malformed amount (issue 11)
        errors.append((field, range_message))
        return None
    except MoneyError:
        errors.append((field, MONEY_MESSAGE))
        return None
    if not 0 < minor <= MAX_SUM_INSURED:
        errors.append((field, range_message))
        return None
    return minor


def _code(value: Any, field: str, errors: list[tuple[str, str]]) -> str | None:
    code = _text(value, field, errors, max_length=64)
    if code is not None and not _CODE_RE.fullmatch(code):
        errors.append((field, "Letters, digits and . _ / - only."))
        return None
    return code


# The keys each body takes (SPEC §7 request bodies); any other is refused, not dropped: a partner who sent
# `status` or `premium_amount` must not believe it was applied (newcomer trial; the serializers' rule, ADR 0015).
FIELDS_OF_TYPE = {
    EndorsementType.ADDITION: frozenset({"type", "effective_date", "sum_insured", "employee"}),
    EndorsementType.DELETION: frozenset({"type", "effective_date", "sum_insured", "employee_code"}),
    EndorsementType.CORRECTION: frozenset({"type", "effective_date", "employee_code", "changes"}),
}
EMPLOYEE_FIELDS = frozenset({"employee_code", *MEMBER_TEXT_FIELDS, "date_of_birth", "gender", "email"})
REQUEST_ENVELOPE = frozenset({"employer", "policy"})  # a single request's (and a quote's) ids, read by the view
#: The members of the endorsement and batch bodies that hold a JSON object or array (`row` stands for each item of
#: a batch's `rows`), with what a value of another JSON type is told: it was given, with the wrong type, so
#: "required" would mislead. Absent (or null) keeps each member's own "required" message.
COMPOUND_MEMBERS: dict[str, tuple[type, str]] = {
    "employee": (dict, "Must be an object with the member's details."),
    "changes": (dict, "Must be an object with the fields to correct."),
    "rows": (list, "Must be an array of rows, each an object shaped like a single request's body."),
    "row": (dict, "Each row must be an object."),
}


def unknown_fields(keys: Any, allowed: frozenset[str], prefix: str = "") -> list[tuple[str, str]]:
    """`(path, UNKNOWN_FIELD_MESSAGE)` for each key of a JSON object not in `allowed` (at most 20)."""
    return [(f"{prefix}{str(k)[:64]}", UNKNOWN_FIELD_MESSAGE) for k in keys if k not in allowed][:20]


def draft_from_request(body: Mapping[str, Any], *, envelope: frozenset[str] = REQUEST_ENVELOPE) -> EndorsementDraft:
    """A single-request body or a JSON batch row → draft (SPEC §7 request bodies).

    Raises `ParseErrors` listing every bad field with its path (`employee.email`, `changes.sum_insured`): a key
    the body's type does not take (`envelope`: the keys read by the caller — `employer`/`policy` of a single
    request, none in a batch row); a member of another JSON type than its own, saying which (`COMPOUND_MEMBERS`);
    a date of birth giving an age outside 0–100 on the effective date, with the other fields' errors. Money is
    returned in paise; `employer`/`policy` are not read here (see `parse_id`)."""
    errors: list[tuple[str, str]] = []
    kind = body.get("type")
    if not isinstance(kind, str) or kind not in _TYPES:
        raise ParseErrors([("type", f"Must be one of: {', '.join(EndorsementType.values)}.")])
    errors += unknown_fields(body, FIELDS_OF_TYPE[EndorsementType(kind)] | envelope)
    effective_date = _date(body.get("effective_date"), "effective_date", errors)
    sum_insured = _sum_insured(body.get("sum_insured"), "sum_insured", errors)
    details: dict[str, Any] = {}
    employee_code: str | None
    if kind == EndorsementType.ADDITION:
        employee = _compound(body, "employee", errors, absent="Member details are required for an addition.")
        employee_code = None
        if employee is not None:
            errors += unknown_fields(employee, EMPLOYEE_FIELDS, "employee.")
            employee_code = _code(employee.get("employee_code"), "employee.employee_code", errors)
            details = _member_fields(employee, "employee.", errors, required=True)
    else:
        employee_code = _code(body.get("employee_code"), "employee_code", errors)
        if kind == EndorsementType.CORRECTION:
            changes = _compound(body, "changes", errors, absent="A correction needs at least one change.")
            if changes is not None and not changes:
                errors.append(("changes", "A correction needs at least one change."))
            elif changes is not None:
                for name in sorted(str(k) for k in changes if k not in CORRECTABLE_FIELDS):
                    errors.append((f"changes.{name}", "This field cannot be corrected."))
                details = _member_fields(changes, "changes.", errors, required=False)
                if "sum_insured" in changes:
                    sum_insured = _sum_insured(changes.get("sum_insured"), "changes.sum_insured", errors)
                    if sum_insured is None and not any(f == "changes.sum_insured" for f, _ in errors):
                        errors.append(("changes.sum_insured", "Must be greater than 0."))
        elif body.get("sum_insured") not in (None, ""):
            errors.append(("sum_insured", "A deletion has no sum insured."))
    dob = details.get("date_of_birth")
    if dob is not None and effective_date is not None and not 0 <= age_on(dob, effective_date) <= 100:
        # With the other field checks (it needs only two fields of the body), so one answer names every fault.
        errors.append(
            ("employee.date_of_birth" if kind == EndorsementType.ADDITION else "changes.date_of_birth", AGE_MESSAGE)
        )
    if errors:
        raise ParseErrors(errors)
    assert employee_code is not None
    assert effective_date is not None
    return EndorsementDraft(
        type=kind, employee_code=employee_code, effective_date=effective_date, details=details, sum_insured=sum_insured
    )


def _compound(
    body: Mapping[str, Any], name: str, errors: list[tuple[str, str]], *, absent: str
) -> Mapping[str, Any] | None:
    """`body[name]` when it is a JSON object (`COMPOUND_MEMBERS`); otherwise None and an error on `name`: `absent`
    when it is missing or null, the member's type message when it has another type."""
    value = body.get(name)
    if isinstance(value, Mapping):
        return value
    errors.append((name, absent if value is None else COMPOUND_MEMBERS[name][1]))
    return None


def draft_from_csv_row(row: Mapping[str, str]) -> EndorsementDraft:
    """A CSV row (flat columns, cells already stripped) → the request shape, then `draft_from_request`."""
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
    return draft_from_request(body)


def csv_field_name(field: str) -> str:
    """Request-shaped error fields → the CSV column a user can find (`employee.email` → `email`)."""
    return field.split(".")[-1]


# --- CSV files ---------------------------------------------------------------------------------------------------

_UNDECODABLE_RE = re.compile(r"[\udc80-\udcff]")
_FOREIGN_BOMS = {
    b"\xff\xfe\x00\x00": "UTF-32",
    b"\x00\x00\xfe\xff": "UTF-32",
    b"\xff\xfe": "UTF-16",
    b"\xfe\xff": "UTF-16",
}
_OTHER_DELIMITERS = (";", "\t", "|")
_DELIMITER_NAMES = {";": "semicolon (;)", "\t": "tab", "|": "pipe (|)"}


@dataclass(slots=True)
class CsvRow:
    """One non-blank data row of an uploaded CSV."""

    row: int  # 1-based among data rows (the header and blank rows are not counted)
    line: int  # 1-based line of the file on which the row starts (the header is line 1)
    cells: dict[str, str] = field(default_factory=dict)  # column → stripped cell
    errors: list[tuple[str, str]] = field(default_factory=list)  # structural faults: the row cannot be parsed


# long: ~65 lines, kept whole on purpose: the reader's line bookkeeping (`previous_line`, `start`) and the row
# numbering must advance together on every path of the one loop, which a split would spread over functions.
def read_csv(content: bytes) -> list[CsvRow]:
    """The rows of an uploaded CSV (UTF-8, optional BOM, LF/CRLF/CR line ends, RFC 4180 quoting).

    Raises `ParseErrors([("file", …)])` for what makes the whole file unreadable: another encoding's BOM, an
    empty file, a header delimited by something other than commas, missing/unknown/duplicate columns, a quoted
    field never closed (the rest of the file would be one cell), more than `MAX_ROWS` rows. Everything else is
    a `CsvRow.errors` entry of its own row, so the other rows are kept: a different number of cells than the
    header, bytes that are not UTF-8 (reported on their column), a malformed quote. Blank rows (`,,,,`) are
    skipped and not counted.
    """
    for bom, name in _FOREIGN_BOMS.items():
        if content.startswith(bom):
            raise ParseErrors([("file", f"The file is {name}-encoded; save it as UTF-8 CSV.")])
    # Undecodable bytes become lone surrogates, reported on the row and column that holds them.
    text = content.decode("utf-8-sig", errors="surrogateescape")
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header = _read_header(reader)
    width = len(header)
    named = [(i, name) for i, name in enumerate(header) if name]
    unnamed = [i for i, name in enumerate(header) if not name]
    optional = {i for i, name in named if name in CSV_OPTIONAL}
    undecodable = bool(_UNDECODABLE_RE.search(text))  # else no cell needs the check
    rows: list[CsvRow] = []
    previous_line = reader.line_num
    while True:
        start = previous_line + 1
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            if "unexpected end of data" in str(exc):  # only at the end of the file, inside quotes
                raise ParseErrors([("file", f"Line {start}: a quoted field is never closed.")])
            previous_line = reader.line_num
            rows.append(CsvRow(len(rows) + 1, start, errors=[("row", f"Malformed CSV: {exc}.")]))
            _check_count(rows)
            continue
        previous_line = reader.line_num
        stripped = [c.strip() for c in cells]
        if not any(stripped):
            continue
        current = CsvRow(len(rows) + 1, start)
        rows.append(current)
        _check_count(rows)
        if len(stripped) != width and (
            any(stripped[width:]) or any(i not in optional for i in range(len(stripped), width))
        ):
            current.errors.append(("row", f"This row has {len(cells)} cells; the header has {width}."))
            continue
        stray = [i for i in unnamed if i < len(stripped) and stripped[i]]
        if stray:
            current.errors.append(("row", f"Cell {stray[0] + 1} has a value but its column has no name."))
            continue
        if len(stripped) < width:
            stripped += [""] * (width - len(stripped))
        current.cells = {name: stripped[i] for i, name in named}
        if undecodable:
            current.errors += [
                (name, "Not valid UTF-8; save the file as UTF-8 CSV.")
                for name, cell in current.cells.items()
                if _UNDECODABLE_RE.search(cell)
            ]
    if not rows:
        raise ParseErrors([("file", "The file has a header but no rows.")])
    return rows


def _check_count(rows: list[CsvRow]) -> None:
    if len(rows) > MAX_ROWS:
        raise ParseErrors([("file", f"At most {MAX_ROWS} rows per batch.")])


def _read_header(reader: Any) -> list[str]:
    """The header row, lower-cased and stripped; `ParseErrors` on `file` if it cannot be Keel's header."""
    try:
        raw = next(reader)
        while not any(c.strip() for c in raw):  # blank lines above the header
            raw = next(reader)
    except StopIteration:
        raise ParseErrors([("file", "The file is empty.")])
    except csv.Error as exc:
        raise ParseErrors([("file", f"Line {reader.line_num}: the header is not valid CSV ({exc}).")])
    header = [c.strip().lower() for c in raw]
    if any(_UNDECODABLE_RE.search(h) for h in header):
        raise ParseErrors([("file", "The file must be UTF-8 encoded CSV.")])
    if len(header) == 1:
        found = max(_OTHER_DELIMITERS, key=header[0].count)
        if header[0].count(found):
            detail = f"The file is delimited by {_DELIMITER_NAMES[found]}, not commas; save it as comma-separated CSV."
            raise ParseErrors([("file", detail)])
    names = [h for h in header if h]
    duplicate = sorted({h for h in names if names.count(h) > 1})
    if duplicate:
        raise ParseErrors([("file", f"Duplicate column(s): {', '.join(duplicate)}.")])
    missing = [c for c in CSV_COLUMNS if c not in names]
    if missing:
        raise ParseErrors([("file", f"Missing column(s): {', '.join(missing)}.")])
    unknown = [c for c in names if c not in CSV_COLUMNS + CSV_OPTIONAL]
    if unknown:
        raise ParseErrors(
            [("file", f"Unknown column(s): {', '.join(unknown)}. Known: {', '.join(CSV_COLUMNS + CSV_OPTIONAL)}.")]
        )
    return header
