"""Money: integer minor units (paise) inside, decimal strings with two places at the API. Never float.

The API grammar for an amount (ADR 0014) is one regular expression, `MONEY_PATTERN`: optional sign only
where a caller allows it, 1–15 integer digits without leading zeros, optionally a point and one or two
digits. Exponents (`1e3`), digit separators (`1_000`, `1,000`), whitespace, `NaN`/`Infinity` and more
than two places are rejected before any arithmetic, so no input can overflow or raise
`decimal.InvalidOperation`.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal

CURRENCY = "INR"
_CENT = Decimal("0.01")
#: The largest amount any money field accepts: ₹999,999,999,999,999.99 (fits a bigint in paise).
MAX_MINOR = 10**17 - 1


def decimal_pattern(*, whole_digits: int, places: int) -> str:
    """The one grammar of decimal strings at the API (ADR 0014): 1–`whole_digits` digits without leading
    zeros, optionally a point and 1–`places` digits; ASCII digits only, no sign, exponent, separator or blank.
    Money is `decimal_pattern(whole_digits=15, places=2)`; a policy's premium rate per mille (6, 4)."""
    return rf"^(0|[1-9][0-9]{{0,{whole_digits - 1}}})(\.[0-9]{{1,{places}}})?$"


#: Decimal strings at the API (documented as the schema `pattern` of every money field).
MONEY_PATTERN = decimal_pattern(whole_digits=15, places=2)
_MONEY_RE = re.compile(r"-?(0|[1-9][0-9]{0,14})(\.[0-9]{1,2})?")


class MoneyError(ValueError):
    pass


class NegativeAmountError(MoneyError):
    """A well-formed amount with a minus sign where none is allowed: a range error, not a grammar error, so
    fields answer it with their range message ("Must be greater than 0…"), never "enter an amount as a decimal
    string" (issue 11)."""


def to_minor(amount: Decimal | str | int, *, allow_negative: bool = False) -> int:
    """Rupees → integer paise, by the API grammar (`MONEY_PATTERN`).

    Accepts a decimal string (`"1234.5"`, `"1234.50"`), an `int` (whole rupees) or a finite `Decimal`
    with at most two places. Raises `MoneyError` for floats, booleans, exponents, separators, blanks,
    more than two places, more than 15 integer digits; `NegativeAmountError` (a `MoneyError`) for a
    well-formed negative amount unless `allow_negative`.
    """
    if isinstance(amount, (bool, float)):
        raise MoneyError("money must be a decimal string, not a float")
    if isinstance(amount, int):
        text = str(amount)
    elif isinstance(amount, Decimal):
        if not amount.is_finite():
            raise MoneyError("amount must be finite")
        text = format(amount, "f")
        if "." in text:  # Decimal("1.500") → "1.500": trailing zeros are not extra precision
            text = text.rstrip("0").rstrip(".") or "0"
    elif isinstance(amount, str):
        text = amount
    else:
        raise MoneyError(f"not a decimal amount: {type(amount).__name__}")
    if len(text) > 24 or not _MONEY_RE.fullmatch(text):
        raise MoneyError("enter an amount as a decimal string with at most two places, like 1234.50")
    if text.startswith("-") and not allow_negative:
        raise NegativeAmountError("amount must not be negative")
    whole, _, frac = text.lstrip("-").partition(".")
    minor = int(whole) * 100 + int((frac + "00")[:2])
    return -minor if text.startswith("-") else minor


def money_range_message(min_minor: int, max_minor: int) -> str:
    """What a money field says to an amount outside [`min_minor`, `max_minor`] paise — negative ("-5") or
    zero where it must be positive alike (issue 11): "Must be greater than 0 and at most 10000000000.00.",
    "Must not be negative.", "Must be at least 100.00."; the upper bound is named when it is not `MAX_MINOR`."""
    if min_minor == 1:
        lower = "Must be greater than 0"
    elif min_minor == 0:
        lower = "Must not be negative"
    else:
        lower = f"Must be at least {format_minor(min_minor)}"
    upper = f" and at most {format_minor(max_minor)}" if max_minor < MAX_MINOR else ""
    return f"{lower}{upper}."


def round_to_minor(value: Decimal) -> int:
    """Round an exact Decimal amount in rupees half-up to paise (pricing rounds once, at the end)."""
    return int((value.quantize(_CENT, rounding=ROUND_HALF_UP) * 100).to_integral_value())


def from_minor(minor: int) -> Decimal:
    return (Decimal(minor) / 100).quantize(_CENT)


def format_minor(minor: int) -> str:
    """Integer paise → "1234.50" (the API's representation)."""
    return f"{from_minor(minor):.2f}"


def display_rupees(minor: int | None) -> str:
    """Integer paise → what an operator reads: "₹20,71,230.50" (Indian digit grouping: thousands, then
    lakhs and crores in twos), "−₹12.00" for a negative amount, "" for None. Display only (admin, /ops/);
    the API keeps `format_minor`'s plain decimal string."""
    if minor is None:
        return ""
    whole, fraction = f"{from_minor(abs(minor)):.2f}".split(".")
    head, tail = whole[:-3], whole[-3:]
    groups: list[str] = []
    while len(head) > 2:
        groups.insert(0, head[-2:])
        head = head[:-2]
    if head:
        groups.insert(0, head)
    grouped = ",".join([*groups, tail]) if groups else tail
    return f"{'−' if minor < 0 else ''}₹{grouped}.{fraction}"
