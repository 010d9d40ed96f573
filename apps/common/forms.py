"""Django form fields for operator forms (the admin): the same money grammar and e-mail rule as the API."""

from __future__ import annotations

from typing import Any

from django import forms

from apps.common.money import MAX_MINOR, MoneyError, NegativeAmountError, format_minor, money_range_message, to_minor
from apps.common.text import EMAIL_VALIDATOR, ControlCharacterValidator


class MoneyFormField(forms.CharField):
    """Rupees typed by an operator ("25000.50") → integer paise, by `to_minor` (ADR 0014). Shows paise as rupees."""

    def __init__(self, *, min_minor: int = 0, max_minor: int = MAX_MINOR, **kwargs: Any) -> None:
        self.min_minor, self.max_minor = min_minor, max_minor
        kwargs.setdefault("help_text", "Rupees with at most two decimals, e.g. 25000.00")
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        return format_minor(value) if isinstance(value, int) and not isinstance(value, bool) else value

    def to_python(self, value: Any) -> int | None:  # type: ignore[override]
        text = super().to_python(value)
        if text is None or text in self.empty_values:
            return None
        try:
            minor = to_minor(text)
        except NegativeAmountError:
            raise forms.ValidationError(money_range_message(self.min_minor, self.max_minor), code="min_value")
        except MoneyError as exc:
            raise forms.ValidationError(str(exc).capitalize() + ".", code="invalid")
        if minor < self.min_minor:
            raise forms.ValidationError(money_range_message(self.min_minor, self.max_minor), code="min_value")
        if minor > self.max_minor:
            raise forms.ValidationError(money_range_message(self.min_minor, self.max_minor), code="max_value")
        return minor


class StrictEmailFormField(forms.EmailField):
    """`forms.EmailField` with the API's e-mail rule (no `localhost` allow-list) and no control characters."""

    default_validators = [EMAIL_VALIDATOR, ControlCharacterValidator()]
