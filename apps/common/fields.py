"""DRF fields shared by every API: money as decimal strings with two places."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.common.money import MAX_MINOR, MONEY_PATTERN, MoneyError, format_minor, to_minor


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
        except MoneyError:
            self.fail("invalid")
        if minor < self.min_minor:
            raise serializers.ValidationError(f"Must be at least {format_minor(self.min_minor)}.")
        if minor > self.max_minor:
            raise serializers.ValidationError(f"Must be at most {format_minor(self.max_minor)}.")
        return minor
