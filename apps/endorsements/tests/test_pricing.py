"""Pricing exactly as SPEC §7: table tests (leap years, first/last day, rounding), properties, and a
hypothesis comparison with a rational oracle for all three types (issue 8, kind 7)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from apps.endorsements.pricing import format_exact_rupees, quote, round_half_up

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


def test_the_issue_example_is_rounded_once_at_the_end():
    # 3650.00 × 4.5‰ × 19/365 = 0.855 exactly → 0.86; rounding the day fraction first gave 0.85.
    q = quote(
        kind="addition",
        rate_per_mille=RATE,
        policy_start=date(2026, 4, 1),
        policy_end=date(2027, 3, 31),
        effective_date=date(2027, 3, 13),
        sum_insured_new=3650_00,
    )

    assert (q.remaining_days, q.term_days) == (19, 365)
    assert (q.premium_amount, q.premium_direction) == (86, "debit")
    assert format_exact_rupees(q.annual_premium_exact) == "16.425"
    assert q.annual_premium == 16_43  # the stored annual premium, rounded half-up


@pytest.mark.parametrize(
    ("paise", "text"),
    [
        (Fraction(0), "0.00"),
        (Fraction(225000), "2250.00"),
        (Fraction(16425, 10), "16.425"),
        (Fraction(1, 10**6), "0.00000001"),
        (Fraction(-5, 2), "-0.025"),
    ],
)
def test_exact_amounts_are_written_with_as_many_places_as_they_need(paise, text):
    assert format_exact_rupees(paise) == text


def test_an_amount_without_a_finite_decimal_expansion_is_refused():
    with pytest.raises(ValueError, match="no decimal expansion"):
        format_exact_rupees(Fraction(1, 3))


@pytest.mark.parametrize(("value", "rounded"), [(Fraction(1, 2), 1), (Fraction(3, 2), 2), (Fraction(49, 100), 0)])
def test_round_half_up_rounds_halves_away_from_zero(value, rounded):
    assert round_half_up(value) == rounded


def _oracle(kind, rate, start, end, effective, new, old):
    """SPEC §7 written out in 80-digit decimals (not Fractions) and rounded half-up to paise once."""
    with localcontext() as ctx:
        ctx.prec = 80
        term = end.toordinal() - start.toordinal() + 1
        remaining = end.toordinal() - effective.toordinal() + 1

        def annual(si):
            return Decimal(si) * rate / 1000  # paise

        if kind == "addition":
            signed = annual(new) * remaining / term
        elif kind == "deletion":
            signed = -annual(old) * remaining / term
        else:
            signed = (annual(new if new is not None else old) - annual(old)) * remaining / term
        amount = int(abs(signed).quantize(Decimal(1), rounding=ROUND_HALF_UP))
    direction = "none" if amount == 0 else ("debit" if signed > 0 else "credit")
    return amount, direction, remaining, term


SUMS = st.integers(min_value=1, max_value=10**12)  # paise, up to the parser's MAX_SUM_INSURED


@given(
    kind=st.sampled_from(["addition", "deletion", "correction"]),
    si_new=st.one_of(st.none(), SUMS),
    si_old=SUMS,
    rate=st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("999999.9999"), places=4),
    start=st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 12, 31)),
    term=st.integers(min_value=1, max_value=1200),
    offset=st.integers(min_value=0, max_value=1199),
)
@example(  # the issue's example: 3650.00 × 4.5‰ × 19/365 = 0.855 → 0.86
    kind="addition", si_new=3650_00, si_old=1, rate=Decimal("4.5"), start=date(2026, 4, 1), term=365, offset=346
)
def test_every_type_matches_a_rational_oracle(kind, si_new, si_old, rate, start, term, offset):
    end = start + timedelta(days=term - 1)
    effective = start + timedelta(days=offset % term)
    new = si_new if kind == "correction" else (si_new or si_old)

    q = quote(
        kind=kind,
        rate_per_mille=rate,
        policy_start=start,
        policy_end=end,
        effective_date=effective,
        sum_insured_new=new if kind != "deletion" else None,
        sum_insured_old=si_old if kind != "addition" else None,
    )

    expected = _oracle(kind, rate, start, end, effective, new, si_old)
    assert (q.premium_amount, q.premium_direction, q.remaining_days, q.term_days) == expected
    # The quoted annual premium is exact: a partner recomputing from it gets the same premium.
    annual = Decimal(format_exact_rupees(q.annual_premium_exact)) * 100
    assert Fraction(annual) == q.annual_premium_exact
    # Every kind: from the quote alone (a correction also shows the annual premium before the change).
    before = q.annual_premium_before_exact
    assert (before is None) == (kind != "correction")
    if before is not None:
        assert Fraction(Decimal(format_exact_rupees(before)) * 100) == before
    recomputed = abs(Fraction(annual) - (before or 0)) * q.remaining_days / q.term_days
    assert round_half_up(recomputed) == q.premium_amount


@given(
    kind=st.sampled_from(["addition", "deletion", "correction"]),
    odd=st.integers(min_value=0, max_value=300).map(lambda k: 2 * k + 1),
    odd_rate=st.integers(min_value=0, max_value=499).map(lambda k: 2 * k + 1),
    start=st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 12, 31)),
    term=st.integers(min_value=1, max_value=1200),
    old=st.integers(min_value=1, max_value=10**9),
)
def test_exact_halves_round_up_for_every_type(kind, odd, odd_rate, start, term, old):
    # On the policy's last day (1 of `term` days) a sum insured of 500 × term × odd paise at an odd rate per
    # mille costs exactly odd × rate / 2 paise — a half: the cases where rounding anything early goes wrong.
    end = start + timedelta(days=term - 1)
    change = 500 * term * odd

    q = quote(
        kind=kind,
        rate_per_mille=Decimal(odd_rate),
        policy_start=start,
        policy_end=end,
        effective_date=end,
        sum_insured_new={"addition": change, "deletion": None, "correction": old + change}[kind],
        sum_insured_old={"addition": None, "deletion": change, "correction": old}[kind],
    )

    assert q.premium_amount == (odd * odd_rate + 1) // 2
    assert q.premium_direction == ("credit" if kind == "deletion" else "debit")
