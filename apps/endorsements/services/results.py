"""The insurer's answers (SPEC §7–8): SENT → CONFIRMED → ACTIVE (hold captured or refund posted, cover
changed) or → REJECTED (hold released); CONFIRMED endorsements whose effective date comes become ACTIVE."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from apps.common.actors import Actor
from apps.common.errors import DomainValidationError
from apps.employers import selectors as employer_selectors
from apps.employers import services as employer_services
from apps.endorsements.conflicts import contradictions_record
from apps.endorsements.models import Endorsement, EndorsementType, PremiumDirection
from apps.endorsements.services.funds import _release_holds
from apps.endorsements.services.rows import draft_of
from apps.endorsements.services.transitions import (
    S,
    Transition,
    _move_many,
    _on_terminal,
    _record,
    _Step,
    _today,
)
from apps.ledger import services as ledger

if TYPE_CHECKING:
    from apps.employers.models import Policy


@dataclass(frozen=True, slots=True)
class InsurerOutcome:
    """One insurer answer about one endorsement (from the gateway's reply, a callback or a result file)."""

    endorsement_id: int
    outcome: str  # confirmed | rejected | pending
    insurer_reference: str | None = None
    rejection_class: str | None = None
    rejection_reason: str | None = None


@transaction.atomic
def results_apply(*, outcomes: Sequence[InsurerOutcome], actor: Actor, source: str = "gateway") -> list[Transition]:
    """Apply the insurer's answers to SENT endorsements: CONFIRMED (→ ACTIVE when effective) or REJECTED.

    Endorsements not in SENT any more (a redelivered result, a late callback) are left alone; a result that
    contradicts their decided state is recorded as an insurer conflict (`source`: gateway | callback).
    """
    decided = [o for o in outcomes if o.outcome in ("confirmed", "rejected")]
    endorsements = {
        e.pk: e
        for e in Endorsement.objects.select_for_update()
        .filter(pk__in=[o.endorsement_id for o in decided])
        .order_by("id")
    }
    confirmed: list[_Step] = []
    rejected: list[_Step] = []
    moved_on: list[tuple[Endorsement, InsurerOutcome]] = []
    for o in decided:
        e = endorsements.get(o.endorsement_id)
        if e is None or e.status != S.SENT:
            if e is not None:
                moved_on.append((e, o))
            continue
        if o.outcome == "confirmed":
            reference = (o.insurer_reference or "")[:100]
            confirmed.append(
                _Step(e, f"confirmed by insurer ({o.insurer_reference})", {"insurer_reference": reference})
            )
        else:
            reason = (o.rejection_reason or "rejected by insurer")[:500]
            fields = {"rejection_class": (o.rejection_class or "unknown")[:24], "rejection_reason": reason}
            rejected.append(_Step(e, reason, fields))
    # A result contradicting a decided state (e.g. confirmed after FAILED) is an insurer conflict (kind 11).
    contradictions_record(pairs=moved_on, source=source)
    transitions = _move_many(confirmed, S.CONFIRMED, allowed_from=[S.SENT])
    rejections = _move_many(rejected, S.REJECTED, allowed_from=[S.SENT])
    finished = [endorsements[t.endorsement_id] for t in rejections]
    _release_holds([(e, e.rejection_reason) for e in finished], actor=actor)
    today = _today()
    due = [
        endorsements[t.endorsement_id] for t in transitions if endorsements[t.endorsement_id].effective_date <= today
    ]
    activations = _activate_many(due, actor=actor)
    finished += [endorsements[t.endorsement_id] for t in activations]
    _record(transitions + rejections + activations, actor=actor, endorsements=endorsements)
    _on_terminal(finished)
    return transitions + rejections + activations


@transaction.atomic
def endorsements_activate_due(*, actor: Actor, today: date | None = None, limit: int = 1000) -> int:
    """Beat job: CONFIRMED endorsements whose effective date has come become ACTIVE. Returns how many."""
    today = today or _today()
    due = list(
        Endorsement.objects.select_for_update(skip_locked=True)
        .filter(status=S.CONFIRMED, effective_date__lte=today)
        .order_by("id")[:limit]
    )
    transitions = _activate_many(due, actor=actor)
    _record(transitions, actor=actor, endorsements={e.pk: e for e in due})
    _on_terminal([e for e in due if e.status == S.ACTIVE])
    return len(transitions)


def _activate_many(confirmed: Sequence[Endorsement], *, actor: Actor) -> list[Transition]:
    """CONFIRMED → ACTIVE for many endorsements in the caller's transaction: the moves in bulk, the holds of
    debits captured in one lock round per employer, refunds posted for credits, the coverage changed."""
    transitions = _move_many(
        [_Step(e, "cover in force") for e in confirmed],
        S.ACTIVE,
        allowed_from=[S.CONFIRMED],
        activated_at=timezone.now(),
    )
    if not transitions:
        return []
    by_id = {e.pk: e for e in confirmed}
    active = [by_id[t.endorsement_id] for t in transitions]
    debits = [e.hold_reference for e in active if e.premium_direction == PremiumDirection.DEBIT]
    ledger.holds_capture_bulk(references=debits, actor=actor)
    ledger.refunds_post_bulk(
        requests=[
            ledger.RefundRequest(
                employer_id=e.employer_id,
                amount=e.premium_amount,
                reference=f"refund:{e.hold_reference}",
                endorsement_id=e.pk,
            )
            for e in active
            if e.premium_direction == PremiumDirection.CREDIT
        ],
        actor=actor,
    )
    policies = employer_selectors.policies_get({e.policy_id for e in active})
    additions = [e for e in active if e.type == EndorsementType.ADDITION]
    if additions:
        _coverage_start_many(additions, policies=policies, actor=actor)
    deletions = [e for e in active if e.type == EndorsementType.DELETION]
    if deletions:
        _coverage_end_many(deletions, actor=actor)
    for e in active:
        if e.type == EndorsementType.CORRECTION:
            _coverage_correct(e, actor=actor)
    return transitions


def _coverage_start_many(additions: Sequence[Endorsement], *, policies: dict[int, Policy], actor: Actor) -> None:
    by_employer: dict[int, dict[str, dict[str, Any]]] = defaultdict(dict)
    for e in additions:
        by_employer[e.employer_id][e.employee_code] = draft_of(e).details
    employees = {
        (employer_id, employee.employee_code): employee
        for employer_id, members in by_employer.items()
        for employee in employer_services.employees_upsert_many(employer_id=employer_id, members=members)
    }
    starts = []
    for e in additions:
        assert e.sum_insured is not None
        starts.append(
            employer_services.CoverageStart(
                employee=employees[(e.employer_id, e.employee_code)],
                policy=policies[e.policy_id],
                sum_insured=e.sum_insured,
                start_date=e.effective_date,
                endorsement_id=e.pk,
            )
        )
    employer_services.coverages_start_many(starts=starts, actor=actor)


def _coverage_end_many(deletions: Sequence[Endorsement], *, actor: Actor) -> None:
    """Deletions end the members' cover: the last covered day is the day before the effective date (never
    before the cover started)."""
    found = employer_selectors.coverages_active_for(members=[(e.policy_id, e.employee_code) for e in deletions])
    ends = []
    for e in deletions:
        coverage = found.get((e.policy_id, e.employee_code))
        if coverage is None:
            raise DomainValidationError({"employee_code": "The member is no longer covered."})
        last_day = max(coverage.start_date, e.effective_date - timedelta(days=1))
        ends.append(employer_services.CoverageEnd(coverage=coverage, end_date=last_day, endorsement_id=e.pk))
    employer_services.coverages_end_many(ends=ends, actor=actor)


def _coverage_correct(e: Endorsement, *, actor: Actor) -> None:
    """A correction updates the member's cover (sum insured) and the employee's details."""
    coverage = employer_selectors.coverage_active(policy_id=e.policy_id, employee_code=e.employee_code)
    if coverage is None:
        raise DomainValidationError({"employee_code": "The member is no longer covered."})
    details = draft_of(e).details
    _, diff = (
        employer_services.employee_upsert(employer_id=e.employer_id, employee_code=e.employee_code, details=details)
        if details
        else (None, {})
    )
    employer_services.coverage_update(
        coverage=coverage, sum_insured=e.sum_insured, employee_diff=diff, endorsement_id=e.pk, actor=actor
    )
