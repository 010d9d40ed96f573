"""Pro-rata endorsement pricing (SPEC §7). Exact Decimal arithmetic, ROUND_HALF_UP to paise once, at the end.

annual(member)  = sum_insured × premium_rate_per_mille / 1000
term_days       = (policy.end_date − policy.start_date).days + 1
remaining_days  = (policy.end_date − effective_date).days + 1
addition   → debit  annual × remaining_days / term_days
deletion   → credit annual(current) × remaining_days / term_days
correction → (annual_new − annual_old) × remaining_days / term_days  (debit > 0, credit < 0, none = 0)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

Direction = Literal["debit", "credit", "none"]
_PAISE = Decimal(100)
_CENT = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class Quote:
    premium_amount: int  # paise, ≥ 0
    premium_direction: Direction
    annual_premium: int  # paise, the member's annual premium after the change (rounded for display)
    remaining_days: int
    term_days: int


def annual_premium(*, sum_insured: int, rate_per_mille: Decimal) -> Decimal:
    """Exact annual premium in rupees for a sum insured in paise (not rounded)."""
    return (Decimal(sum_insured) / _PAISE) * rate_per_mille / Decimal(1000)


def _round_paise(rupees: Decimal) -> int:
    return int(rupees.quantize(_CENT, rounding=ROUND_HALF_UP) * _PAISE)


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
    remaining_days, term_days = _days(policy_start=policy_start, policy_end=policy_end, effective_date=effective_date)
    fraction = Decimal(remaining_days) / Decimal(term_days)
    if kind == "addition":
        assert sum_insured_new is not None
        annual = annual_premium(sum_insured=sum_insured_new, rate_per_mille=rate_per_mille)
        signed = annual * fraction
    elif kind == "deletion":
        assert sum_insured_old is not None
        annual = annual_premium(sum_insured=sum_insured_old, rate_per_mille=rate_per_mille)
        signed = -(annual * fraction)
    else:
        assert sum_insured_old is not None
        new = sum_insured_new if sum_insured_new is not None else sum_insured_old
        annual = annual_premium(sum_insured=new, rate_per_mille=rate_per_mille)
        old = annual_premium(sum_insured=sum_insured_old, rate_per_mille=rate_per_mille)
        signed = (annual - old) * fraction
    amount = _round_paise(abs(signed))
    direction: Direction = "none" if amount == 0 else ("debit" if signed > 0 else "credit")
    return Quote(
        premium_amount=amount,
        premium_direction=direction,
        annual_premium=_round_paise(annual),
        remaining_days=remaining_days,
        term_days=term_days,
    )
