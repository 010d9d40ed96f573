from __future__ import annotations

from django import template

from apps.common.money import display_rupees

register = template.Library()


@register.filter
def rupees(minor: int | None) -> str:
    """Paise → "₹20,71,230.50" (apps.common.money.display_rupees)."""
    return display_rupees(minor)
