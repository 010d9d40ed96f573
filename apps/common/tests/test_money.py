"""The money grammar (ADR 0014): one spelling per amount, everything else refused before any arithmetic."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from apps.common.fields import MoneyField
from apps.common.forms import MoneyFormField
from apps.common.money import MAX_MINOR, MONEY_PATTERN, MoneyError, format_minor, to_minor


def oracle(text: str) -> int | None:
    """An independent reading of the grammar: paise, or None when the text is not an amount."""
    whole, dot, frac = text.partition(".")
    if not whole or any(c not in "0123456789" for c in whole + frac):
        return None
    if len(whole) > 15 or (len(whole) > 1 and whole[0] == "0"):
        return None
    if dot and not 1 <= len(frac) <= 2:
        return None
    return int(whole) * 100 + int(frac.ljust(2, "0") or "0")


@settings(max_examples=500, deadline=None)
@given(minor=st.integers(min_value=0, max_value=MAX_MINOR))
def test_every_amount_round_trips_through_its_decimal_string(minor):
    text = format_minor(minor)

    assert re.fullmatch(MONEY_PATTERN, text)
    assert to_minor(text) == minor
    assert to_minor(Decimal(text)) == minor
    if minor % 100 == 0:
        assert to_minor(minor // 100) == minor  # a JSON integer is whole rupees
        assert to_minor(str(minor // 100)) == minor


@settings(max_examples=1000, deadline=None)
@given(text=st.text(alphabet="0123456789.-+eE_, \t\u0660", max_size=20))
@example("1e3")
@example("1_000")
@example("1,000")
@example("1e30")
@example(" 1")
@example("01")
@example(".5")
@example("5.")
@example("1.234")
@example("1" * 27)
def test_a_string_is_accepted_exactly_when_the_oracle_reads_an_amount(text):
    expected = oracle(text)
    if expected is None:
        with pytest.raises(MoneyError):
            to_minor(text)
    else:
        assert to_minor(text) == expected
    # The published schema pattern says the same as the parser.
    assert (re.fullmatch(MONEY_PATTERN, text) is not None) is (expected is not None)


@pytest.mark.parametrize("value", [1.5, 1e30, True, False, None, [], {}, Decimal("NaN"), Decimal("Infinity"), "NaN"])
def test_non_strings_and_non_finite_values_are_refused(value):
    with pytest.raises(MoneyError):
        to_minor(value)


def test_negative_amounts_only_where_allowed():
    with pytest.raises(MoneyError):
        to_minor("-1.50")
    assert to_minor("-1.50", allow_negative=True) == -150


@pytest.mark.parametrize("value", ["1e3", "1_000", "1e30", "9" * 27, "1.001", "-5", 1.5, True, None, "", " 5"])
def test_money_field_answers_a_validation_error_never_an_exception(value):
    field = MoneyField()
    with pytest.raises(serializers.ValidationError):
        field.run_validation(value)


def test_money_field_bounds():
    field = MoneyField(min_minor=1, max_minor=10_000)
    assert field.run_validation("100") == 10_000
    assert field.run_validation(25) == 2_500
    for value in ("0", "100.01"):
        with pytest.raises(serializers.ValidationError):
            field.run_validation(value)


def test_money_form_field_uses_the_same_grammar():
    field = MoneyFormField(min_minor=1)
    assert field.clean("25000.50") == 2_500_050
    assert field.prepare_value(2_500_050) == "25000.50"
    from django import forms

    for value in ("1e3", "1_000", "0", "1.234", "9" * 27):
        with pytest.raises(forms.ValidationError):
            field.clean(value)
