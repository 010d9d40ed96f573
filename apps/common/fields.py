"""DRF fields shared by every API: money and rates as decimal strings, by one grammar (ADR 0014)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.common.money import (
    MAX_MINOR,
    MONEY_PATTERN,
    MoneyError,
    NegativeAmountError,
    decimal_pattern,
    format_minor,
    money_range_message,
    to_minor,
)


@extend_schema_field(
    {
        "type": "string",
        "format": "decimal",
        "pattern": MONEY_PATTERN,
        "example": "1234.50",
        "description": "Indian rupees as a decimal string: digits, optionally a point and one or two places "
        "(responses always carry two). No exponent, separators, sign or spaces.",
    }
)
class MoneyField(serializers.Field):  # type: ignore[type-arg]
    """Integer paise inside, decimal string with two places outside ("1234.50")."""

    default_error_messages = {"invalid": "Enter an amount as a decimal string with at most two places."}

    def __init__(self, *, min_minor: int = 0, max_minor: int = MAX_MINOR, **kwargs: Any) -> None:
        self.min_minor, self.max_minor = min_minor, max_minor
        super().__init__(**kwargs)

    def to_representation(self, value: int) -> str:
        return format_minor(value)

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, (str, int, Decimal)):
            self.fail("invalid")
        try:
            minor = to_minor(data)
        except NegativeAmountError:
            raise serializers.ValidationError(money_range_message(self.min_minor, self.max_minor)) from None
        except MoneyError:
            self.fail("invalid")
        if not self.min_minor <= minor <= self.max_minor:
            raise serializers.ValidationError(money_range_message(self.min_minor, self.max_minor))
        return minor


#: A policy's premium rate per mille at the API: up to 6 whole digits and 4 places (the column's
#: `max_digits=10, decimal_places=4`), by the same grammar as money (ADR 0014).
RATE_PATTERN = decimal_pattern(whole_digits=6, places=4)


@extend_schema_field(
    {
        "type": "string",
        "format": "decimal",
        "pattern": RATE_PATTERN,
        "example": "4.5",
        "description": "A rate per mille as a decimal string: up to six digits, optionally a point and one to "
        "four places. No exponent, separators, sign or spaces.",
    }
)
class RateField(serializers.Field):  # type: ignore[type-arg]
    """A premium rate per mille: `Decimal` inside, decimal string outside ("4.5000"), parsed by the API's one
    decimal grammar (`RATE_PATTERN`), so `1e3`, `1_000`, `+4.5`, ` 4.5`, `4.` and non-ASCII digits are 422
    (issue 8, kind 2), where DRF's `DecimalField` accepted anything `Decimal()` reads."""

    default_error_messages = {"invalid": "Enter a rate as a decimal string with at most four places, like 4.5."}

    def __init__(self, *, min_value: Decimal | None = None, **kwargs: Any) -> None:
        self.min_value = min_value
        super().__init__(**kwargs)

    def to_representation(self, value: Decimal) -> str:
        return f"{value:.4f}"

    def to_internal_value(self, data: Any) -> Decimal:
        if isinstance(data, bool) or not isinstance(data, (str, int)):
            self.fail("invalid")
        text = str(data)
        if len(text) > 12 or not _RATE_RE.fullmatch(text):
            self.fail("invalid")
        value = Decimal(text)
        if self.min_value is not None and value < self.min_value:
            raise serializers.ValidationError(f"Must be at least {self.min_value}.")
        return value


_RATE_RE = re.compile(RATE_PATTERN[1:-1])
