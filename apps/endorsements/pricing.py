"""All endorsement pricing (SPEC §7): exact rational arithmetic, ROUND_HALF_UP to paise once, at the end.

annual(member)  = sum_insured × premium_rate_per_mille / 1000
term_days       = (policy.end_date − policy.start_date).days + 1
remaining_days  = (policy.end_date − effective_date).days + 1
addition   → debit  annual × remaining_days / term_days
deletion   → credit annual(current) × remaining_days / term_days
correction → (annual_new − annual_old) × remaining_days / term_days  (debit > 0, credit < 0, none = 0)

Every amount is a ratio of two integers (paise), so nothing is rounded before the end: with
Decimal's 28 significant digits the day fraction 19/365 was rounded first, and ₹3,650.00 at 4.5‰ for 19 of 365
days came out 0.85 instead of the exact 0.855 → 0.86 (issue 8, kind 7). The quote shows the exact annual
premium (`format_exact_rupees`) so a partner who recomputes from it gets the same premium.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, Literal

from apps.endorsements.models import EndorsementType
from apps.endorsements.validation import EndorsementDraft, MemberError, MemberState, member_errors

if TYPE_CHECKING:
    from apps.employers.models import Policy

Direction = Literal["debit", "credit", "none"]
# Places beyond which a quoted amount is not written out: a rate has at most 4 places (Policy field), so an
# annual premium needs at most 2 + 4 + 3 = 9; the bound only keeps a non-terminating input from looping.
_MAX_PLACES = 30


@dataclass(frozen=True, slots=True)
class Quote:
    premium_amount: int  # paise, ≥ 0, rounded half-up once
    premium_direction: Direction
    annual_premium: int  # paise, the member's annual premium after the change, rounded half-up (stored)
    annual_premium_exact: Fraction  # paise, the same annual premium unrounded (shown by the quote)
    remaining_days: int
    term_days: int
    # paise, unrounded: a correction's annual premium before the change (None for additions and deletions), so
    # premium_amount = round_half_up(|annual_premium − annual_premium_before| × remaining / term) for every kind.
    annual_premium_before_exact: Fraction | None = None


@dataclass(slots=True)
class Priced:
    draft: EndorsementDraft
    quote: Quote
    sum_insured: int | None  # SI after the change (addition/correction), current SI (deletion)
    sum_insured_before: int | None


def round_half_up(value: Fraction) -> int:
    """Nearest integer to a non-negative `value`, halves away from zero (ROUND_HALF_UP)."""
    if value < 0:
        raise ValueError("round_half_up takes a non-negative value")
    return (2 * value.numerator + value.denominator) // (2 * value.denominator)


def format_exact_rupees(paise: Fraction) -> str:
    """An exact amount of paise → rupees as a decimal string with as many places as it needs, at least two
    ("16.425", "2250.00"). Raises ValueError for an amount with no finite decimal expansion."""
    rupees = paise / 100
    sign = "-" if rupees < 0 else ""
    rupees = abs(rupees)
    for places in range(2, _MAX_PLACES + 1):
        scaled = rupees * 10**places
        if scaled.denominator == 1:
            whole, frac = divmod(scaled.numerator, 10**places)
            return f"{sign}{whole}.{frac:0{places}d}"
    raise ValueError(f"{rupees} has no decimal expansion of at most {_MAX_PLACES} places")


def _days(*, policy_start: date, policy_end: date, effective_date: date) -> tuple[int, int]:
    if not policy_start <= effective_date <= policy_end:
        raise ValueError("effective_date is outside the policy term")
    return (policy_end - effective_date).days + 1, (policy_end - policy_start).days + 1


def quote(
    *,
    kind: Literal["addition", "deletion", "correction"],
    rate_per_mille: Decimal,
    policy_start: date,
    policy_end: date,
    effective_date: date,
    sum_insured_new: int | None = None,
    sum_insured_old: int | None = None,
) -> Quote:
    """Price one endorsement (SPEC §7). Sums insured in paise; the result in paise, rounded once, half-up.

    Raises ValueError if `effective_date` is outside the policy term."""
    remaining_days, term_days = _days(policy_start=policy_start, policy_end=policy_end, effective_date=effective_date)
    # Integers throughout: rate = rate_num / rate_den exactly, so every amount is a ratio of two ints.
    rate_num, rate_den = rate_per_mille.as_integer_ratio()
    if kind == "addition":
        assert sum_insured_new is not None
        annual_si = sum_insured_new
        signed_si = sum_insured_new
    elif kind == "deletion":
        assert sum_insured_old is not None
        annual_si = sum_insured_old
        signed_si = -sum_insured_old
    else:
        assert sum_insured_old is not None
        annual_si = sum_insured_new if sum_insured_new is not None else sum_insured_old
        signed_si = annual_si - sum_insured_old
    # premium (paise) = signed_si × rate / 1000 × remaining / term
    numerator = abs(signed_si) * rate_num * remaining_days
    denominator = 1000 * rate_den * term_days
    amount = (2 * numerator + denominator) // (2 * denominator)  # ROUND_HALF_UP, once
    direction: Direction = "none" if amount == 0 else ("debit" if signed_si > 0 else "credit")
    annual_num, annual_den = annual_si * rate_num, 1000 * rate_den
    return Quote(
        premium_amount=amount,
        premium_direction=direction,
        annual_premium=(2 * annual_num + annual_den) // (2 * annual_den),
        annual_premium_exact=Fraction(annual_num, annual_den),
        remaining_days=remaining_days,
        term_days=term_days,
        annual_premium_before_exact=(
            Fraction(sum_insured_old * rate_num, 1000 * rate_den)
            if kind == "correction" and sum_insured_old is not None
            else None
        ),
    )


def price_against(*, draft: EndorsementDraft, policy: Policy, state: MemberState, today: date) -> Priced:
    """Member rules (`validation.member_errors`) and the price of `draft` against the member's projected state.

    Raises `MemberError` with field errors. An addition without a sum insured takes the policy's default; a
    deletion credits the member's current sum insured; a correction prices the difference (SPEC §7)."""
    errors = member_errors(draft=draft, state=state)
    if errors:
        raise MemberError(errors)
    if draft.type == EndorsementType.ADDITION:
        sum_insured: int = draft.sum_insured or policy.default_sum_insured
        q = _policy_quote(policy, draft, kind="addition", new=sum_insured)
        return Priced(draft=draft, quote=q, sum_insured=sum_insured, sum_insured_before=None)
    assert state.sum_insured is not None
    if draft.type == EndorsementType.DELETION:
        q = _policy_quote(policy, draft, kind="deletion", old=state.sum_insured)
        return Priced(draft=draft, quote=q, sum_insured=state.sum_insured, sum_insured_before=state.sum_insured)
    q = _policy_quote(policy, draft, kind="correction", new=draft.sum_insured, old=state.sum_insured)
    new_si = draft.sum_insured if draft.sum_insured is not None else state.sum_insured
    return Priced(draft=draft, quote=q, sum_insured=new_si, sum_insured_before=state.sum_insured)


def _policy_quote(
    policy: Policy,
    draft: EndorsementDraft,
    *,
    kind: Literal["addition", "deletion", "correction"],
    new: int | None = None,
    old: int | None = None,
) -> Quote:
    return quote(
        kind=kind,
        rate_per_mille=policy.premium_rate_per_mille,
        policy_start=policy.start_date,
        policy_end=policy.end_date,
        effective_date=draft.effective_date,
        sum_insured_new=new,
        sum_insured_old=old,
    )
