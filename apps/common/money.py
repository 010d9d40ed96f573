"""Money: integer minor units (paise) inside, decimal strings with two places at the API. Never float."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

CURRENCY = "INR"
_CENT = Decimal("0.01")


class MoneyError(ValueError):
    pass


def to_minor(amount: Decimal | str | int) -> int:
    """Decimal rupees → integer paise. Rejects floats, more than two places, NaN and infinities."""
    if isinstance(amount, float):
        raise MoneyError("money must not be a float")
    try:
        value = Decimal(amount)
    except (InvalidOperation, ValueError) as exc:
        raise MoneyError(f"not a decimal amount: {amount!r}") from exc
    if not value.is_finite():
        raise MoneyError("amount must be finite")
    if value != value.quantize(_CENT):
        raise MoneyError("amount has more than two decimal places")
    return int(value.quantize(_CENT) * 100)


def round_to_minor(value: Decimal) -> int:
    """Round an exact Decimal amount in rupees half-up to paise (pricing rounds once, at the end)."""
    return int((value.quantize(_CENT, rounding=ROUND_HALF_UP) * 100).to_integral_value())


def from_minor(minor: int) -> Decimal:
    return (Decimal(minor) / 100).quantize(_CENT)


def format_minor(minor: int) -> str:
    """Integer paise → "1234.50" (the API's representation)."""
    return f"{from_minor(minor):.2f}"
