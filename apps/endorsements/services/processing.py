"""Processing of RECEIVED endorsements (the `endorsements.process` consumer, SPEC §7):
RECEIVED → VALIDATED → FUNDS_LOCKED | ON_HOLD_FUNDS, or ON_HOLD_REVIEW (velocity breaker), or REJECTED."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import Count, Q
from django.utils import timezone

from apps.common.actors import Actor
from apps.employers.selectors import coverage_sums_active
from apps.endorsements.models import TERMINAL, Endorsement
from apps.endorsements.pricing import price_against
from apps.endorsements.services.funds import _fund_validated
from apps.endorsements.services.rows import draft_of
from apps.endorsements.services.transitions import (
    S,
    Transition,
    _lock_members,
    _move_many,
    _on_terminal,
    _record,
    _Step,
    _today,
)
from apps.endorsements.validation import MemberError, MemberState, apply_to_projection, check_context

if TYPE_CHECKING:
    from apps.employers.models import Employer, Policy


@transaction.atomic
def endorsements_process(*, ids: Sequence[int], actor: Actor) -> list[Transition]:
    """Advance RECEIVED endorsements as far as they can go before the insurer.

    1. Lock the members of all given endorsements (sorted advisory locks), then load them in id order.
    2. An endorsement waits (stays RECEIVED) while an earlier one for the same member is not terminal; it is
       processed again when that one finishes (`_on_terminal`).
    3. Re-validate against committed state; a failure is REJECTED (data_mismatch) with the reason.
    4. Velocity breaker: past the employer's hourly limit (or 10× its 7-day hourly average) → ON_HOLD_REVIEW.
    5. VALIDATED; credits/zero-priced become ready to send; debits take holds in one lock round per employer
       (first-fit in id order) → FUNDS_LOCKED (ready) or ON_HOLD_FUNDS (parked).
    Returns the transitions made (history, audit and partner events already recorded).
    """
    endorsements = _lock_and_load(ids)
    if not endorsements:
        return []
    now = timezone.now()
    verdicts = _judge(endorsements, now=now, today=_today())
    transitions = _move_many(verdicts.rejected, S.REJECTED, allowed_from=[S.RECEIVED], rejection_class="data_mismatch")
    transitions += _move_many(verdicts.review, S.ON_HOLD_REVIEW, allowed_from=[S.RECEIVED])
    moved = _move_many(verdicts.validated, S.VALIDATED, allowed_from=[S.RECEIVED])
    transitions += moved
    by_id = {e.pk: e for e in endorsements}
    transitions += _fund_validated([by_id[t.endorsement_id] for t in moved], actor=actor, now=now)
    _record(transitions, actor=actor, endorsements=by_id)
    # A rejected endorsement is terminal: the member's next one (blocked behind it) may go now.
    _on_terminal([s.endorsement for s in verdicts.rejected if s.endorsement.status == S.REJECTED])
    return transitions


def _lock_and_load(ids: Sequence[int]) -> list[Endorsement]:
    """Step 1: lock the members of the RECEIVED endorsements among `ids` (sorted by policy), then re-read
    them under the locks (with policy and employer), in id order: another worker may have moved some."""
    candidates = list(Endorsement.objects.filter(pk__in=ids, status=S.RECEIVED).order_by("id"))
    if not candidates:
        return []
    by_policy: dict[int, set[str]] = defaultdict(set)
    for e in candidates:
        by_policy[e.policy_id].add(e.employee_code)
    for policy_id, codes in sorted(by_policy.items()):
        _lock_members(policy_id, codes)
    return list(
        Endorsement.objects.filter(pk__in=ids, status=S.RECEIVED).select_related("policy", "employer").order_by("id")
    )


@dataclass(slots=True)
class _Verdicts:
    """Where each endorsement goes next, with its history detail and the columns it gets."""

    rejected: list[_Step] = field(default_factory=list)
    review: list[_Step] = field(default_factory=list)
    validated: list[_Step] = field(default_factory=list)


def _judge(endorsements: list[Endorsement], *, now: datetime, today: date) -> _Verdicts:
    """Steps 2–4, per (policy, employer) in id order: blocked members wait; the others are re-validated and
    priced against committed cover (each accepted one applied to the projection) and counted against the
    velocity limit. Reads only; the moves are the caller's."""
    verdicts = _Verdicts()
    blocked = _blocked_members(endorsements)
    for group in _group(endorsements).values():
        policy, employer = group[0].policy, group[0].employer
        # Anything earlier for these members is terminal (or they are blocked), so committed coverage is
        # the state to validate against.
        states = _committed_states(policy, group)
        velocity_count, velocity_limit = _velocity_exceeded_from(employer, group[0].pk, now)
        for e in group:
            if e.pk in blocked:
                continue
            velocity_count += 1
            over_velocity = velocity_count > velocity_limit
            _judge_one(
                e, policy, employer, states, verdicts, today=today, over_velocity=over_velocity, limit=velocity_limit
            )
    return verdicts


def _judge_one(
    e: Endorsement,
    policy: Policy,
    employer: Employer,
    states: dict[str, MemberState],
    verdicts: _Verdicts,
    *,
    today: date,
    over_velocity: bool,
    limit: int,
) -> None:
    """One endorsement's verdict, appended to `verdicts`; an accepted one is applied to `states`."""
    # The backdating window was checked on receipt; a queue delay must not reject it later.
    context_errors = check_context(
        employer=employer, policy=policy, effective_date=e.effective_date, today=today, check_backdating=False
    )
    if context_errors:
        reason = "; ".join(context_errors.values())
        verdicts.rejected.append(_Step(e, reason, {"rejection_reason": reason[:500]}))
        return
    state = states.setdefault(e.employee_code, MemberState(covered=False, sum_insured=None))
    try:
        priced = price_against(draft=draft_of(e), policy=policy, state=state, today=today)
    except MemberError as exc:
        reason = "; ".join(exc.errors.values())
        verdicts.rejected.append(_Step(e, reason, {"rejection_reason": reason[:500]}))
        return
    apply_to_projection(state, kind=e.type, sum_insured=priced.sum_insured)
    price_fields = {
        "premium_amount": priced.quote.premium_amount,
        "premium_direction": priced.quote.premium_direction,
        "annual_premium": priced.quote.annual_premium,
        "sum_insured": priced.sum_insured,
        "sum_insured_before": priced.sum_insured_before,
    }
    if over_velocity and not e.review_approved:
        detail = f"velocity breaker: over {limit} endorsements in the last hour"
        verdicts.review.append(_Step(e, detail, price_fields))
        return
    verdicts.validated.append(_Step(e, "validated", price_fields))


def _velocity_exceeded_from(employer: Employer, first_id: int, now: datetime) -> tuple[int, int]:
    """(received in the last hour before `first_id`, the limit that applies to this employer now)."""
    hour_ago = now - timedelta(hours=1)
    week_ago = now - timedelta(days=7)
    counts = Endorsement.objects.filter(employer=employer, created_at__gte=week_ago).aggregate(
        last_hour=Count("id", filter=Q(created_at__gte=hour_ago, id__lt=first_id)),
        week=Count("id", filter=Q(created_at__lt=hour_ago)),
    )
    limit = employer.velocity_limit_per_hour
    hourly_average = counts["week"] / (7 * 24 - 1)
    if hourly_average >= 10:
        limit = min(limit, int(hourly_average * 10))
    return counts["last_hour"], limit


def _group(endorsements: list[Endorsement]) -> dict[tuple[int, int], list[Endorsement]]:
    groups: dict[tuple[int, int], list[Endorsement]] = defaultdict(list)
    for e in endorsements:
        groups[(e.policy_id, e.employer_id)].append(e)
    return groups


def _blocked_members(endorsements: list[Endorsement]) -> set[int]:
    """Ids that must wait: an earlier endorsement for the same member is still in flight."""
    blocked: set[int] = set()
    by_policy: dict[int, list[Endorsement]] = defaultdict(list)
    for e in endorsements:
        by_policy[e.policy_id].append(e)
    for policy_id, group in by_policy.items():
        first_id_of: dict[str, int] = {}
        for e in group:
            first_id_of.setdefault(e.employee_code, e.pk)
        earlier = (
            Endorsement.objects.filter(policy_id=policy_id, employee_code__in=list(first_id_of))
            .exclude(status__in=TERMINAL)
            .values_list("employee_code", "id")
        )
        earliest_in_flight: dict[str, int] = {}
        for code, pk in earlier:
            if pk < first_id_of[code]:
                earliest_in_flight[code] = min(pk, earliest_in_flight.get(code, pk))
        seen: set[str] = set()
        for e in group:
            if e.employee_code in earliest_in_flight or e.employee_code in seen:
                blocked.add(e.pk)
            seen.add(e.employee_code)
    return blocked


def _committed_states(policy: Policy, group: list[Endorsement]) -> dict[str, MemberState]:
    states: dict[str, MemberState] = {}
    for code, sum_insured in coverage_sums_active(policy=policy, employee_codes=[e.employee_code for e in group]):
        states[code] = MemberState(covered=True, sum_insured=sum_insured)
    return states
