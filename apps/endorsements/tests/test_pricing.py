"""Pricing exactly as SPEC §7: table tests (leap years, first/last day, rounding) and properties."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.endorsements.pricing import quote

RATE = Decimal("4.5")
SI_5L = 500_000_00  # ₹5,00,000 in paise


@pytest.mark.parametrize(
    ("start", "end", "effective", "expected_paise", "remaining", "term"),
    [
        # leap-year policy: 366 days
        (date(2024, 1, 1), date(2024, 12, 31), date(2024, 1, 1), 2250_00, 366, 366),  # first day: full annual
        (date(2024, 1, 1), date(2024, 12, 31), date(2024, 12, 31), 6_15, 1, 366),  # last day: 2250/366 = 6.1475…
        (date(2024, 1, 1), date(2024, 12, 31), date(2024, 7, 1), 1131_15, 184, 366),  # 2250×184/366 = 1131.147…
        # ordinary year: 365 days
        (date(2025, 1, 1), date(2025, 12, 31), date(2025, 3, 1), 1886_30, 306, 365),  # 2250×306/365 = 1886.301…
        (date(2025, 1, 1), date(2025, 12, 31), date(2025, 12, 31), 6_16, 1, 365),  # 6.164…
        # a term that spans 29 February
        (date(2023, 7, 1), date(2024, 6, 30), date(2024, 2, 29), 756_15, 123, 366),  # 2250×123/366 = 756.147…
    ],
)
def test_addition_is_annual_premium_times_remaining_over_term(start, end, effective, expected_paise, remaining, term):
    q = quote(
        kind="addition",
        rate_per_mille=RATE,
        policy_start=start,
        policy_end=end,
        effective_date=effective,
        sum_insured_new=SI_5L,
    )

    assert (q.premium_amount, q.premium_direction) == (expected_paise, "debit")
    assert (q.remaining_days, q.term_days, q.annual_premium) == (remaining, term, 2250_00)


def test_rounding_is_half_up_once_at_the_end():
    # annual ₹1.00 over an 8-day term, 1 day remaining: 0.125 → 0.13 (half-up), not 0.12 (half-even)
    q = quote(
        kind="addition",
        rate_per_mille=Decimal(1),
        policy_start=date(2025, 1, 1),
        policy_end=date(2025, 1, 8),
        effective_date=date(2025, 1, 8),
        sum_insured_new=1000_00,
    )

    assert q.premium_amount == 13


def test_deletion_is_a_credit_of_the_same_formula():
    add = quote(
        kind="addition",
        rate_per_mille=RATE,
        policy_start=date(2025, 1, 1),
        policy_end=date(2025, 12, 31),
        effective_date=date(2025, 3, 1),
        sum_insured_new=SI_5L,
    )
    delete = quote(
        kind="deletion",
        rate_per_mille=RATE,
        policy_start=date(2025, 1, 1),
        policy_end=date(2025, 12, 31),
        effective_date=date(2025, 3, 1),
        sum_insured_old=SI_5L,
    )

    assert (delete.premium_amount, delete.premium_direction) == (add.premium_amount, "credit")


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (SI_5L, 600_000_00, (225_62, "debit")),  # (2700 − 2250) × 183/365 = 225.616…
        (600_000_00, SI_5L, (225_62, "credit")),
        (SI_5L, None, (0, "none")),  # non-financial correction (names, e-mail…)
        (SI_5L, SI_5L, (0, "none")),
    ],
)
def test_correction_prices_the_difference(old, new, expected):
    q = quote(
        kind="correction",
        rate_per_mille=RATE,
        policy_start=date(2025, 1, 1),
        policy_end=date(2025, 12, 31),
        effective_date=date(2025, 7, 2),
        sum_insured_old=old,
        sum_insured_new=new,
    )

    assert (q.premium_amount, q.premium_direction) == expected
    assert q.remaining_days == 183


def test_effective_date_outside_the_term_is_refused():
    with pytest.raises(ValueError, match="outside the policy term"):
        quote(
            kind="addition",
            rate_per_mille=RATE,
            policy_start=date(2025, 1, 1),
            policy_end=date(2025, 12, 31),
            effective_date=date(2026, 1, 1),
            sum_insured_new=SI_5L,
        )


@given(
    si=st.integers(min_value=1, max_value=10**12),
    rate=st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("999.9999"), places=4),
    term=st.integers(min_value=1, max_value=800),
    offset=st.integers(min_value=0, max_value=799),
)
def test_premium_never_exceeds_annual_and_addition_mirrors_deletion(si, rate, term, offset):
    start = date(2024, 1, 1)
    end = start + timedelta(days=term - 1)
    effective = start + timedelta(days=min(offset, term - 1))
    add = quote(
        kind="addition",
        rate_per_mille=rate,
        policy_start=start,
        policy_end=end,
        effective_date=effective,
        sum_insured_new=si,
    )
    delete = quote(
        kind="deletion",
        rate_per_mille=rate,
        policy_start=start,
        policy_end=end,
        effective_date=effective,
        sum_insured_old=si,
    )

    assert 0 <= add.premium_amount <= add.annual_premium
    assert add.premium_amount == delete.premium_amount
    exact = Decimal(si) * rate / 1000 * add.remaining_days / add.term_days  # paise, unrounded
    assert abs(Decimal(add.premium_amount) - exact) <= Decimal("0.5")
