"""Endorsement workflows (SPEC §7). Every transition is a conditional UPDATE on the current status, recorded in
the endorsement's history and the audit log, in one transaction with its ledger operation and outbox events.

Pipeline (see docs/adr/0012-endorsement-pipeline.md):

1. `endorsement_submit` / `endorsement_batch_create` (API request): validate, price, store RECEIVED, enqueue
   `endorsements.process` (key = member for singles, batch chunk for batches).
2. `endorsements_process` (consumer): per member in order — wait behind an earlier in-flight endorsement,
   re-validate against committed state, velocity breaker → ON_HOLD_REVIEW, VALIDATED, then debits take a hold
   (one lock round per employer) → FUNDS_LOCKED or ON_HOLD_FUNDS. Ready endorsements get `ready_at`.
3. `scheduler_tick` (beat, every second): per insurer, when its window has elapsed or a batch is full, moves
   ready endorsements to SENT — credits first — and enqueues one `endorsements.dispatch` per batch.
4. The dispatch consumer calls the insurer outside any transaction, then `results_apply`: CONFIRMED →
   ACTIVE (capture or refund + coverage) or REJECTED (hold released); a retry budget ends in FAILED.
5. Reaching a terminal state wakes the member's next endorsement and may complete its batch.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Case, Count, IntegerField, Min, Q, Value, When
from django.utils import timezone

from apps.audit.services import AuditEntry, audit_record, audit_record_many
from apps.common import bulk
from apps.common.actors import Actor
from apps.common.errors import Conflict, DomainValidationError
from apps.employers import selectors as employer_selectors
from apps.employers import services as employer_services
from apps.employers.models import Employer, Policy
from apps.endorsements import selectors
from apps.endorsements.conflicts import contradictions_record
from apps.endorsements.events import (
    batch_completed_events_record,
    endorsement_events_record,
    endorsements_received_events_record,
)
from apps.endorsements.models import (
    CANCELLABLE,
    TERMINAL,
    Endorsement,
    EndorsementBatch,
    EndorsementHistory,
    EndorsementStatus,
    EndorsementType,
    PremiumDirection,
)
from apps.endorsements.pricing import Priced, price_against
from apps.endorsements.validation import (
    LARGE_IN_LIST,
    EndorsementDraft,
    MemberError,
    MemberState,
    apply_to_projection,
    check_context,
    project_member,
    project_members,
)
from apps.insurers.models import Insurer
from apps.ledger import services as ledger
from apps.ledger.services import HoldRequest
from apps.outbox.services import outbox_enqueue

S = EndorsementStatus
DUPLICATE_WINDOW = timedelta(hours=24)
PROCESS_CHUNK = 500


def _today() -> date:
    return timezone.localdate()


# --- locking -------------------------------------------------------------------------------------------------


def _lock_members(policy_id: int, employee_codes: Iterable[str]) -> None:
    """Serialise work on the same members (policy, employee_code) across requests and workers.

    PostgreSQL: transaction-scoped advisory locks, taken in sorted order so two batches cannot deadlock.
    SQLite has a single writer, so the write transaction itself serialises.
    """
    if connection.vendor != "postgresql":
        return
    keys = sorted({_member_lock_key(policy_id, code) for code in employee_codes})
    if len(keys) == 1:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s::bigint)", keys)
    elif keys:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%s::bigint[]) AS k ORDER BY k", [keys])


def _member_lock_key(policy_id: int, employee_code: str) -> int:
    import hashlib

    digest = hashlib.blake2b(f"{policy_id}:{employee_code}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# --- transitions ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transition:
    endorsement_id: int
    from_status: str
    to_status: str
    detail: str


def _record(transitions: Sequence[Transition], *, actor: Actor, endorsements: dict[int, Endorsement]) -> None:
    """History rows and audit events for transitions that already happened (one bulk insert each)."""
    if not transitions:
        return
    EndorsementHistory.objects.bulk_create(
        [
            EndorsementHistory(
                endorsement_id=t.endorsement_id,
                from_status=t.from_status,
                to_status=t.to_status,
                detail=t.detail[:500],
                actor=actor.display[:120],
            )
            for t in transitions
        ],
        batch_size=1000,
    )
    audit_record_many(
        actor=actor,
        entries=[
            AuditEntry(
                action=f"endorsement.{t.to_status.lower()}",
                object_type="endorsement",
                object_id=t.endorsement_id,
                employer_id=endorsements[t.endorsement_id].employer_id,
                before={"status": t.from_status} if t.from_status else None,
                after={"status": t.to_status, **({"detail": t.detail} if t.detail else {})},
            )
            for t in transitions
        ],
    )
    endorsement_events_record(transitions, endorsements)  # partner events (SPEC §10, issue 13)


@dataclass(slots=True)
class _Step:
    """One endorsement's part in a `_move_many`: its history detail and its own column values."""

    endorsement: Endorsement
    detail: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


def _move_many(steps: Sequence[_Step], to: str, *, allowed_from: Iterable[str], **common: Any) -> list[Transition]:
    """`_move` for many endorsements in three statements instead of one UPDATE each.

    1. Lock the rows still in `allowed_from` (SELECT … FOR UPDATE, id order): the others lost a race and are
       left out, exactly as a conditional UPDATE that matched no row.
    2. One UPDATE moves the locked rows to `to` with the values common to all (`common`).
    3. One bulk UPDATE writes each row's own values (`_Step.fields`), if any.
    """
    if not steps:
        return []
    allowed = list(allowed_from)
    by_id = {s.endorsement.pk: s for s in steps}
    movable: list[int] = []
    ids = sorted(by_id)
    for start in range(0, len(ids), 1000):
        movable += (
            Endorsement.objects.select_for_update()
            .filter(pk__in=ids[start : start + 1000], status__in=allowed)
            .order_by("id")
            .values_list("pk", flat=True)
        )
    if not movable:
        return []
    now = timezone.now()
    for start in range(0, len(movable), 1000):
        Endorsement.objects.filter(pk__in=movable[start : start + 1000]).update(status=to, updated_at=now, **common)
    transitions: list[Transition] = []
    own: set[str] = set()
    for pk in movable:
        step = by_id[pk]
        e = step.endorsement
        transitions.append(Transition(pk, e.status, to, step.detail))
        e.status = to
        e.updated_at = now
        for name, value in (common | step.fields).items():
            setattr(e, name, value)
        own.update(step.fields)
    if own:
        with_own = [by_id[pk].endorsement for pk in movable if by_id[pk].fields]
        bulk.bulk_update(with_own, sorted(own))
    return transitions


def _move(
    endorsement: Endorsement, to: str, *, allowed_from: Iterable[str], detail: str = "", **fields: Any
) -> Transition | None:
    """Conditional transition: UPDATE … WHERE id = … AND status IN allowed_from. None if it lost a race."""
    previous = endorsement.status
    updated = Endorsement.objects.filter(pk=endorsement.pk, status__in=list(allowed_from)).update(
        status=to, updated_at=timezone.now(), **fields
    )
    if updated != 1:
        return None
    endorsement.status = to
    for name, value in fields.items():
        setattr(endorsement, name, value)
    return Transition(endorsement.pk, previous, to, detail)


# --- submit --------------------------------------------------------------------------------------------------


def _fields(
    *,
    employer: Employer,
    policy: Policy,
    priced: Priced,
    partner_id: int,
    batch_id: int | None,
    content_hash: str | None = None,
) -> dict[str, Any]:
    """Column values of a new RECEIVED endorsement (shared by single inserts and COPY of batches)."""
    d, q = priced.draft, priced.quote
    return {
        "employer_id": employer.pk,
        "policy_id": policy.pk,
        "insurer_id": policy.insurer_id,
        "partner_id": partner_id,
        "batch_id": batch_id,
        "type": d.type,
        "status": S.RECEIVED,
        "employee_code": d.employee_code,
        "details": _jsonable(
            {**d.details, "sum_insured": d.sum_insured}
            if d.type == EndorsementType.CORRECTION and d.sum_insured is not None
            else d.details
        ),
        "effective_date": d.effective_date,
        "sum_insured": priced.sum_insured,
        "sum_insured_before": priced.sum_insured_before,
        "premium_amount": q.premium_amount,
        "premium_direction": q.premium_direction,
        "annual_premium": q.annual_premium,
        "remaining_days": q.remaining_days,
        "term_days": q.term_days,
        "content_hash": content_hash or d.content_hash(employer_id=employer.pk, policy_id=policy.pk),
        "idempotency_key": uuid.uuid4().hex,
    }


def endorsement_quote(*, employer: Employer, policy: Policy, draft: EndorsementDraft) -> Priced:
    """Validate and price without any side effect (POST /endorsements/quote)."""
    errors = check_context(employer=employer, policy=policy, effective_date=draft.effective_date, today=_today())
    if errors:
        raise DomainValidationError(errors)
    state = project_member(policy=policy, employee_code=draft.employee_code)
    try:
        return price_against(draft=draft, policy=policy, state=state, today=_today())
    except MemberError as exc:
        raise DomainValidationError(exc.errors)


@transaction.atomic
def endorsement_submit(
    *, employer: Employer, policy: Policy, draft: EndorsementDraft, partner_id: int, actor: Actor
) -> Endorsement:
    """Validate, price and store one endorsement (RECEIVED) and enqueue its processing.

    The caller has authenticated, resolved tenancy (employer/policy) and parsed the body into `draft`.
    1. Lock the member (advisory lock) so concurrent requests for the same member are serialised.
    2. Refuse a duplicate — the same content received in the last 24 h for this employer and not FAILED,
       REJECTED or CANCELLED — with 409 and the existing id, *before* the member rules (SPEC §7; issue 8,
       kind 10): a resent addition is a duplicate, not "already covered".
    3. Validate the context and the member against the projected state (in-flight endorsements count); 422.
    4. Insert, record history + audit, enqueue `endorsements.process` keyed by member (ordered per member).
    """
    _lock_members(policy.pk, [draft.employee_code])
    content_hash = draft.content_hash(employer_id=employer.pk, policy_id=policy.pk)
    existing = selectors.endorsement_duplicate_of(
        employer_id=employer.pk, content_hash=content_hash, since=timezone.now() - DUPLICATE_WINDOW
    )
    if existing is not None:
        raise Conflict(
            "An identical endorsement was received in the last 24 hours.",
            slug="duplicate-endorsement",
            extra={"existing_id": existing},
        )
    priced = endorsement_quote(employer=employer, policy=policy, draft=draft)
    endorsement = Endorsement(
        **_fields(
            employer=employer,
            policy=policy,
            priced=priced,
            partner_id=partner_id,
            batch_id=None,
            content_hash=content_hash,  # computed once, for the duplicate check above
        )
    )
    endorsement.save()
    _record(
        [Transition(endorsement.pk, "", S.RECEIVED, "received")],
        actor=actor,
        endorsements={endorsement.pk: endorsement},
    )
    outbox_enqueue(topic="endorsements.process", payload={"ids": [endorsement.pk]}, key=endorsement.member_key)
    return endorsement


# --- process: RECEIVED → VALIDATED → FUNDS_LOCKED | ON_HOLD_FUNDS | ON_HOLD_REVIEW | REJECTED -----------------


def _velocity_exceeded_from(employer: Employer, first_id: int, now: Any) -> tuple[int, int]:
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


@transaction.atomic
def endorsements_process(*, ids: Sequence[int], actor: Actor) -> list[Transition]:
    """Advance RECEIVED endorsements as far as they can go before the insurer.

    1. Lock the members of all given endorsements (sorted advisory locks), then load them in id order.
    2. An endorsement waits (stays RECEIVED) while an earlier one for the same member is not terminal; it is
       processed again when that one finishes (`_wake_members`).
    3. Re-validate against committed state; a failure is REJECTED (data_mismatch) with the reason.
    4. Velocity breaker: past the employer's hourly limit (or 10× its 7-day hourly average) → ON_HOLD_REVIEW.
    5. VALIDATED; credits/zero-priced become ready to send; debits take holds in one lock round per employer
       (first-fit in id order) → FUNDS_LOCKED (ready) or ON_HOLD_FUNDS (parked).
    """
    candidates = list(Endorsement.objects.filter(pk__in=ids, status=S.RECEIVED).order_by("id"))
    if not candidates:
        return []
    by_policy: dict[int, set[str]] = defaultdict(set)
    for e in candidates:
        by_policy[e.policy_id].add(e.employee_code)
    for policy_id, codes in sorted(by_policy.items()):
        _lock_members(policy_id, codes)
    # Re-read under the locks: another worker may have moved some of them meanwhile.
    endorsements = list(
        Endorsement.objects.filter(pk__in=ids, status=S.RECEIVED).select_related("policy", "employer").order_by("id")
    )
    if not endorsements:
        return []
    now = timezone.now()
    today = _today()
    rejected: list[_Step] = []
    review: list[_Step] = []
    validated: list[_Step] = []

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
            # The backdating window was checked on receipt; a queue delay must not reject it later.
            context_errors = check_context(
                employer=employer, policy=policy, effective_date=e.effective_date, today=today, check_backdating=False
            )
            if context_errors:
                reason = "; ".join(context_errors.values())
                rejected.append(_Step(e, reason, {"rejection_reason": reason[:500]}))
                continue
            state = states.setdefault(e.employee_code, MemberState(covered=False, sum_insured=None))
            try:
                priced = price_against(draft=_draft_of(e), policy=policy, state=state, today=today)
            except MemberError as exc:
                reason = "; ".join(exc.errors.values())
                rejected.append(_Step(e, reason, {"rejection_reason": reason[:500]}))
                continue
            apply_to_projection(state, kind=e.type, sum_insured=priced.sum_insured)
            price_fields = {
                "premium_amount": priced.quote.premium_amount,
                "premium_direction": priced.quote.premium_direction,
                "annual_premium": priced.quote.annual_premium,
                "sum_insured": priced.sum_insured,
                "sum_insured_before": priced.sum_insured_before,
            }
            if velocity_count > velocity_limit and not e.review_approved:
                detail = f"velocity breaker: over {velocity_limit} endorsements in the last hour"
                review.append(_Step(e, detail, price_fields))
                continue
            validated.append(_Step(e, "validated", price_fields))

    transitions = _move_many(rejected, S.REJECTED, allowed_from=[S.RECEIVED], rejection_class="data_mismatch")
    transitions += _move_many(review, S.ON_HOLD_REVIEW, allowed_from=[S.RECEIVED])
    moved = _move_many(validated, S.VALIDATED, allowed_from=[S.RECEIVED])
    transitions += moved
    to_hold: dict[int, list[Endorsement]] = defaultdict(list)
    by_id = {e.pk: e for e in endorsements}
    ready_now = []
    for t in moved:
        e = by_id[t.endorsement_id]
        if e.premium_direction == PremiumDirection.DEBIT:
            to_hold[e.employer_id].append(e)
        else:
            ready_now.append(e)
    _mark_ready(ready_now, now)
    transitions += _place_holds(to_hold, actor=actor, now=now)
    _record(transitions, actor=actor, endorsements=by_id)
    # A rejected endorsement is terminal: the member's next one (blocked behind it) may go now.
    _on_terminal([s.endorsement for s in rejected if s.endorsement.status == S.REJECTED])
    return transitions


def _mark_ready(endorsements: Sequence[Endorsement], now: Any) -> None:
    """Credits and zero-priced endorsements need no hold: ready to send at once."""
    if endorsements:
        Endorsement.objects.filter(pk__in=[e.pk for e in endorsements]).update(ready_at=now)
    for e in endorsements:
        e.ready_at = now


def _after_validation(e: Endorsement, to_hold: dict[int, list[Endorsement]], now: Any) -> list[Transition]:
    if e.premium_direction == PremiumDirection.DEBIT:
        to_hold[e.employer_id].append(e)
    else:
        _mark_ready([e], now)
    return []


def _place_holds(to_hold: dict[int, list[Endorsement]], *, actor: Actor, now: Any) -> list[Transition]:
    """Debits: holds for each employer in one lock round, first-fit in id order (FIFO for parked ones)."""
    locked: list[_Step] = []
    parked: list[_Step] = []
    for employer_id in sorted(to_hold):
        group = to_hold[employer_id]
        results = ledger.holds_place_bulk(
            employer_id=employer_id,
            requests=[
                HoldRequest(reference=e.hold_reference, amount=e.premium_amount, endorsement_id=e.pk) for e in group
            ],
            actor=actor,
        )
        for e, result in zip(group, results, strict=True):
            if result.placed:
                locked.append(_Step(e, f"hold of {e.premium_amount} paise placed"))
            elif e.status == S.VALIDATED:
                parked.append(_Step(e, "insufficient available balance; parked until funds arrive"))
    transitions = _move_many(locked, S.FUNDS_LOCKED, allowed_from=[S.VALIDATED, S.ON_HOLD_FUNDS], ready_at=now)
    return transitions + _move_many(parked, S.ON_HOLD_FUNDS, allowed_from=[S.VALIDATED])


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
    from apps.employers.models import Coverage, CoverageStatus

    states: dict[str, MemberState] = {}
    for code, sum_insured in Coverage.objects.filter(
        policy=policy, status=CoverageStatus.ACTIVE, employee__employee_code__in=[e.employee_code for e in group]
    ).values_list("employee__employee_code", "sum_insured"):
        states[code] = MemberState(covered=True, sum_insured=sum_insured)
    return states


def _draft_of(e: Endorsement) -> EndorsementDraft:
    details = dict(e.details)
    if "date_of_birth" in details and isinstance(details["date_of_birth"], str):
        details["date_of_birth"] = date.fromisoformat(details["date_of_birth"])
    if e.type == EndorsementType.ADDITION:
        requested_si = e.sum_insured
    elif e.type == EndorsementType.CORRECTION:
        requested_si = details.pop("sum_insured", None)
    else:
        requested_si = None
    return EndorsementDraft(
        type=e.type,
        employee_code=e.employee_code,
        effective_date=e.effective_date,
        details=details,
        sum_insured=requested_si,
    )


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, date) else v) for k, v in details.items()}


# --- scheduler: ready → SENT, per insurer, in tumbling windows, credits first --------------------------------

READY = Q(status__in=[S.VALIDATED, S.FUNDS_LOCKED], ready_at__isnull=False)


def scheduler_tick(*, actor: Actor, force: bool = False, now: Any = None) -> int:
    """Send ready endorsements, grouped per insurer. Returns how many batches were dispatched.

    1. One aggregate query finds, per insurer, how many endorsements are ready and since when.
    2. An insurer is due when its oldest ready endorsement has waited its window (default 5 s) or a full batch
       is waiting (`force` ignores the window: tests and the demo).
    3. Each batch is claimed in its own short transaction with FOR UPDATE SKIP LOCKED (a concurrent tick or a
       partner's cancel never blocks on it), credits first then debits, oldest first; it moves to SENT and one
       `endorsements.dispatch` event carries its ids (no ordering key: a member has one endorsement in flight).
    """
    now = now or timezone.now()
    dispatched = 0
    rows = Endorsement.objects.filter(READY).values("insurer_id").annotate(n=Count("id"), oldest=Min("ready_at"))
    for row in rows:
        insurer = Insurer.objects.get(pk=row["insurer_id"])
        waiting = row["n"]
        window_elapsed = now - row["oldest"] >= timedelta(seconds=insurer.batch_window_seconds)
        while waiting and (force or window_elapsed or waiting >= insurer.batch_size):
            claimed = _dispatch_batch(insurer=insurer, actor=actor)
            if not claimed:
                break
            dispatched += 1
            waiting -= claimed
            window_elapsed = window_elapsed or force
    return dispatched


@transaction.atomic
def _dispatch_batch(*, insurer: Insurer, actor: Actor) -> int:
    debit_last = Case(
        When(premium_direction=PremiumDirection.DEBIT, then=Value(1)), default=Value(0), output_field=IntegerField()
    )
    ids = list(
        Endorsement.objects.select_for_update(skip_locked=True, of=("self",))
        .filter(READY, insurer=insurer)
        .annotate(debit_last=debit_last)
        .order_by("debit_last", "ready_at", "id")
        .values_list("id", flat=True)[: insurer.batch_size]
    )
    if not ids:
        return 0
    endorsements = {e.pk: e for e in Endorsement.objects.filter(pk__in=ids)}
    detail = f"sent to {insurer.code}"
    transitions = _move_many(
        [_Step(endorsements[pk], detail) for pk in ids],
        S.SENT,
        allowed_from=[S.VALIDATED, S.FUNDS_LOCKED],
        sent_at=timezone.now(),
    )
    sent = {t.endorsement_id for t in transitions}
    ordered = [pk for pk in ids if pk in sent]  # credits first, then oldest first, as claimed
    _record(transitions, actor=actor, endorsements=endorsements)
    if ordered:
        outbox_enqueue(
            topic="endorsements.dispatch",
            payload={"insurer_code": insurer.code, "ids": ordered},
            key=None,  # no ordering key: see apps/endorsements/dispatch.py (issue 10)
        )
    return len(ordered)


# --- insurer results -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InsurerOutcome:
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
    policies = Policy.objects.in_bulk({e.policy_id for e in active})
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
        by_employer[e.employer_id][e.employee_code] = _draft_of(e).details
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
    details = _draft_of(e).details
    _, diff = (
        employer_services.employee_upsert(employer_id=e.employer_id, employee_code=e.employee_code, details=details)
        if details
        else (None, {})
    )
    employer_services.coverage_update(
        coverage=coverage, sum_insured=e.sum_insured, employee_diff=diff, endorsement_id=e.pk, actor=actor
    )


def _release_hold(e: Endorsement, *, actor: Actor, reason: str) -> None:
    _release_holds([(e, reason)], actor=actor)


def _release_holds(items: Sequence[tuple[Endorsement, str]], *, actor: Actor) -> None:
    """Release the holds of debits that have one (one lock round per employer), each with its reason."""
    reasons = {e.hold_reference: reason[:200] for e, reason in items if e.premium_direction == PremiumDirection.DEBIT}
    held = ledger.holds_existing(references=list(reasons))
    ledger.holds_release_bulk(reasons={ref: why for ref, why in reasons.items() if ref in held}, actor=actor)


def _on_terminal(finished: Sequence[Endorsement]) -> None:
    """Wake each member's next waiting endorsement; mark batches whose rows are all terminal as completed."""
    codes_by_policy: dict[int, set[str]] = defaultdict(set)
    for e in finished:
        codes_by_policy[e.policy_id].add(e.employee_code)
    for policy_id, codes in sorted(codes_by_policy.items()):
        waiting = (
            Endorsement.objects.filter(policy_id=policy_id, employee_code__in=sorted(codes), status=S.RECEIVED)
            .order_by("id")
            .only("id", "policy_id", "employee_code")
        )
        woken: set[str] = set()
        for nxt in waiting:
            if nxt.employee_code not in woken:
                woken.add(nxt.employee_code)
                outbox_enqueue(topic="endorsements.process", payload={"ids": [nxt.pk]}, key=nxt.member_key)
    for batch_id in {e.batch_id for e in finished if e.batch_id}:
        all_terminal = not Endorsement.objects.filter(batch_id=batch_id).exclude(status__in=TERMINAL).exists()
        if all_terminal and EndorsementBatch.objects.filter(pk=batch_id, completed_at__isnull=True).update(
            completed_at=timezone.now()
        ):
            batch_completed_events_record([batch_id])  # partner event (SPEC §10, issue 13)


@transaction.atomic
def endorsements_fail(*, ids: Sequence[int], reason: str, actor: Actor) -> list[Transition]:
    """The insurer could not take the batch (retry budget spent, or a protocol with no adapter yet): FAILED,
    hold released, error kept. An operator can retry once the cause is fixed."""
    endorsements = {e.pk: e for e in Endorsement.objects.select_for_update().filter(pk__in=ids, status=S.SENT)}
    detail = f"insurer could not take it: {reason}"[:500]
    transitions = _move_many(
        [_Step(e, detail) for e in endorsements.values()],
        S.FAILED,
        allowed_from=[S.SENT],
        last_error=reason[:2000],
        rejection_class="transient",
    )
    finished = [endorsements[t.endorsement_id] for t in transitions]
    _release_holds([(e, "failed") for e in finished], actor=actor)
    _record(transitions, actor=actor, endorsements=endorsements)
    _on_terminal(finished)
    return transitions


@transaction.atomic
def endorsements_activate_due(*, actor: Actor, today: date | None = None, limit: int = 1000) -> int:
    """Beat job: CONFIRMED endorsements whose effective date has come become ACTIVE."""
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


# --- partner and operator actions ------------------------------------------------------------------------------


@transaction.atomic
def endorsement_cancel(*, endorsement: Endorsement, actor: Actor) -> Endorsement:
    """Cancel before the insurer has it (RECEIVED … FUNDS_LOCKED); a held amount is released. 409 otherwise."""
    e = Endorsement.objects.select_for_update().get(pk=endorsement.pk)
    if e.status not in CANCELLABLE:
        raise Conflict(f"An endorsement in status {e.status} can no longer be cancelled.", slug="not-cancellable")
    previous = e.status
    t = _move(e, S.CANCELLED, allowed_from=CANCELLABLE, detail=f"cancelled by {actor.display}")
    assert t is not None  # the row lock makes the conditional update certain
    if previous == S.FUNDS_LOCKED:
        _release_hold(e, actor=actor, reason="cancelled")
    _record([t], actor=actor, endorsements={e.pk: e})
    _on_terminal([e])
    return e


@transaction.atomic
def endorsements_wake_parked(*, employer_id: int, actor: Actor, limit: int = 5000) -> list[Transition]:
    """Funds arrived (top-up or refund): parked debits take holds in FIFO order, first-fit."""
    parked = list(
        Endorsement.objects.select_for_update(skip_locked=True)
        .filter(employer_id=employer_id, status=S.ON_HOLD_FUNDS)
        .order_by("id")[:limit]
    )
    if not parked:
        return []
    transitions = _place_holds({employer_id: parked}, actor=actor, now=timezone.now())
    _record(transitions, actor=actor, endorsements={e.pk: e for e in parked})
    return transitions


@transaction.atomic
def endorsement_review_decide(*, endorsement: Endorsement, approve: bool, reason: str, actor: Actor) -> Endorsement:
    """Operator decision on an ON_HOLD_REVIEW endorsement: approve → continues (hold for debits), decline → REJECTED."""
    e = Endorsement.objects.select_for_update().get(pk=endorsement.pk)
    if e.status != S.ON_HOLD_REVIEW:
        raise Conflict(f"The endorsement is {e.status}, not ON_HOLD_REVIEW.", slug="not-in-review")
    if not approve:
        t = _move(
            e,
            S.REJECTED,
            allowed_from=[S.ON_HOLD_REVIEW],
            detail=f"declined by operator: {reason}"[:500],
            rejection_reason=f"declined by operator: {reason}"[:500],
        )
        transitions = [t] if t else []
        _record(transitions, actor=actor, endorsements={e.pk: e})
        _on_terminal([e])
        return e
    t = _move(
        e,
        S.VALIDATED,
        allowed_from=[S.ON_HOLD_REVIEW],
        detail=f"approved by operator: {reason}"[:500],
        review_approved=True,
    )
    transitions = [t] if t else []
    to_hold: dict[int, list[Endorsement]] = defaultdict(list)
    now = timezone.now()
    _after_validation(e, to_hold, now)
    transitions += _place_holds(to_hold, actor=actor, now=now)
    _record(transitions, actor=actor, endorsements={e.pk: e})
    return e


@transaction.atomic
def endorsement_retry(*, endorsement: Endorsement, actor: Actor) -> Endorsement:
    """Operator retry of a FAILED endorsement: back to RECEIVED and through the pipeline again, with the same
    insurer idempotency key — so an insurer that did apply the first attempt does not apply it twice."""
    e = Endorsement.objects.select_for_update().get(pk=endorsement.pk)
    if e.status != S.FAILED:
        raise Conflict(f"Only FAILED endorsements can be retried; this one is {e.status}.", slug="not-failed")
    t = _move(
        e,
        S.RECEIVED,
        allowed_from=[S.FAILED],
        detail=f"retried by {actor.display}",
        last_error="",
        rejection_class="",
        ready_at=None,
        sent_at=None,
        funding_generation=e.funding_generation + 1,
    )
    _record([t] if t else [], actor=actor, endorsements={e.pk: e})
    outbox_enqueue(topic="endorsements.process", payload={"ids": [e.pk]}, key=e.member_key)
    return e


@transaction.atomic
def endorsements_expire_parked(*, actor: Actor, older_than: timedelta | None = None) -> int:
    """Hold-expiry sweeper: debits parked for longer than ENDORSEMENT_PARK_MAX_HOURS fail (nothing is held)."""
    older_than = older_than or timedelta(hours=settings.ENDORSEMENT_PARK_MAX_HOURS)
    stale = list(
        Endorsement.objects.select_for_update(skip_locked=True)
        .filter(status=S.ON_HOLD_FUNDS, updated_at__lt=timezone.now() - older_than)
        .order_by("id")[:1000]
    )
    transitions = _move_many(
        [_Step(e, "funds did not arrive in time") for e in stale],
        S.FAILED,
        allowed_from=[S.ON_HOLD_FUNDS],
        last_error="parked without funds past the limit",
    )
    _record(transitions, actor=actor, endorsements={e.pk: e for e in stale})
    _on_terminal([e for e in stale if e.status == S.FAILED])
    return len(transitions)


# --- batches ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RowError:
    row: int  # 1-based data row (the CSV header and blank rows are not rows)
    field: str
    detail: str
    line: int | None = None  # 1-based line of the CSV file on which the row starts (None for JSON rows)


@transaction.atomic
def endorsement_batch_create(
    *,
    employer: Employer,
    policy: Policy,
    drafts: Sequence[EndorsementDraft | None],
    parse_errors: Sequence[RowError],
    source: str,
    partner_id: int,
    actor: Actor,
    lines: Sequence[int] | None = None,
) -> EndorsementBatch:
    """Accept the valid rows of a batch and report the invalid ones; nothing valid is lost (SPEC §7).

    `drafts[i]` is data row i+1 (None where parsing failed: its errors are in `parse_errors`); `lines[i]` is the
    CSV line it starts on, reported with each of its errors.
    1. Every member locked (sorted advisory locks); members projected once for the whole batch (2 queries).
    2. Per row, in row order: a duplicate of content received in the last 24 h (one query; endorsements that
       ended FAILED, REJECTED or CANCELLED do not count) or earlier in the same file is a row error naming the
       original — checked before the context and member rules, as for single requests (issue 8, kind 10);
       then context (employer active, policy term, backdating); then member rules against the projection,
       each accepted row applied to it, so "add then delete" in one file is valid and "add twice" is not.
    3. Bulk inserts of endorsements and history; one audit event for the batch; one `endorsements.process`
       event per 500 rows, keyed by batch so its chunks are processed in order.
    """
    today = _today()
    errors = list(parse_errors)
    employee_codes = [d.employee_code for d in drafts if d is not None]
    _lock_members(policy.pk, employee_codes)
    states = project_members(policy=policy, employee_codes=employee_codes)
    hashes = {i: d.content_hash(employer_id=employer.pk, policy_id=policy.pk) for i, d in enumerate(drafts) if d}
    recent_rows = Endorsement.objects.filter(
        employer=employer, created_at__gte=timezone.now() - DUPLICATE_WINDOW
    ).exclude(status__in=selectors.NOT_DUPLICATED_BY)
    wanted_hashes = set(hashes.values())
    if len(wanted_hashes) <= LARGE_IN_LIST:
        recent_rows = recent_rows.filter(content_hash__in=wanted_hashes)
    recent: dict[str, int] = {}
    for content_hash, pk in recent_rows.order_by("id").values_list("content_hash", "id"):
        if content_hash in wanted_hashes:
            recent.setdefault(content_hash, pk)
    seen_in_file: dict[str, int] = {}
    accepted: list[tuple[Priced, str]] = []
    for index, draft in enumerate(drafts):
        if draft is None:
            continue
        row = index + 1
        line = lines[index] if lines is not None else None
        content = hashes[index]
        if content in recent:
            detail = f"Duplicate of endorsement {recent[content]} received in the last 24 h."
            errors.append(RowError(row, "row", detail, line))
            continue
        if content in seen_in_file:
            errors.append(RowError(row, "row", f"Duplicate of row {seen_in_file[content]}.", line))
            continue
        context = check_context(employer=employer, policy=policy, effective_date=draft.effective_date, today=today)
        if context:
            errors += [RowError(row, f, d, line) for f, d in context.items()]
            continue
        state = states.setdefault(draft.employee_code, MemberState(covered=False, sum_insured=None))
        try:
            priced = price_against(draft=draft, policy=policy, state=state, today=today)
        except MemberError as exc:
            named = {f.split(".")[-1] if source == "csv" else f: d for f, d in exc.errors.items()}
            errors += [RowError(row, f, d, line) for f, d in named.items()]
            continue
        apply_to_projection(state, kind=draft.type, sum_insured=priced.sum_insured)
        seen_in_file[content] = row
        accepted.append((priced, content))

    errors.sort(key=lambda e: (e.row, e.field))
    rejected_rows = len({e.row for e in errors})
    batch = EndorsementBatch.objects.create(
        employer=employer,
        policy=policy,
        partner_id=partner_id,
        source=source,
        total_rows=len(drafts),
        accepted=len(accepted),
        rejected=rejected_rows,
        errors=[{"row": e.row, "line": e.line, "field": e.field, "detail": e.detail} for e in errors],
        completed_at=None if accepted else timezone.now(),
    )
    ids = _insert_received(
        employer=employer, policy=policy, accepted=accepted, partner_id=partner_id, batch_id=batch.pk, actor=actor
    )
    endorsements_received_events_record(ids)  # partner events (SPEC §10, issue 13)
    if not accepted:
        batch_completed_events_record([batch.pk])  # nothing to wait for: complete at once (issue 13)
    audit_record(
        actor=actor,
        action="endorsement_batch.created",
        object_type="endorsement_batch",
        object_id=batch.pk,
        employer_id=employer.pk,
        after={
            "total_rows": batch.total_rows,
            "accepted": batch.accepted,
            "rejected": batch.rejected,
            "first_endorsement_id": ids[0] if ids else None,
            "last_endorsement_id": ids[-1] if ids else None,
        },
    )
    for start in range(0, len(ids), PROCESS_CHUNK):
        outbox_enqueue(
            topic="endorsements.process", payload={"ids": ids[start : start + PROCESS_CHUNK]}, key=f"batch:{batch.pk}"
        )
    return batch


_COPY_COLUMNS = (
    "id",
    "employer_id",
    "policy_id",
    "insurer_id",
    "partner_id",
    "batch_id",
    "type",
    "status",
    "employee_code",
    "details",
    "effective_date",
    "sum_insured",
    "sum_insured_before",
    "premium_amount",
    "premium_direction",
    "annual_premium",
    "remaining_days",
    "term_days",
    "content_hash",
    "idempotency_key",
    "review_approved",
    "funding_generation",
    "insurer_reference",
    "rejection_class",
    "rejection_reason",
    "last_error",
    "created_at",
    "updated_at",
)


def _insert_received(
    *,
    employer: Employer,
    policy: Policy,
    accepted: Sequence[tuple[Priced, str]],
    partner_id: int,
    batch_id: int,
    actor: Actor,
) -> list[int]:
    """Insert a batch's accepted rows (RECEIVED) and their first history rows; returns their ids in row order.

    PostgreSQL: ids from the sequence, then `COPY` of both tables (a 10,000-row batch in one round trip each
    instead of building and binding 10,000 model instances). Elsewhere: `bulk_create`.
    """
    values = [
        _fields(
            employer=employer,
            policy=policy,
            priced=priced,
            partner_id=partner_id,
            batch_id=batch_id,
            content_hash=content,
        )
        for priced, content in accepted
    ]
    detail = f"received in batch {batch_id}"
    actor_label = actor.display[:120]
    if not bulk.supports_copy():
        created = Endorsement.objects.bulk_create([Endorsement(**v) for v in values], batch_size=2000)
        EndorsementHistory.objects.bulk_create(
            [
                EndorsementHistory(
                    endorsement_id=e.pk, from_status="", to_status=S.RECEIVED, detail=detail, actor=actor_label
                )
                for e in created
            ],
            batch_size=2000,
        )
        return [e.pk for e in created]
    ids = bulk.allocate_ids(Endorsement, len(values))
    now = timezone.now()
    constant = {
        "review_approved": False,
        "funding_generation": 0,
        "insurer_reference": "",
        "rejection_class": "",
        "rejection_reason": "",
        "last_error": "",
        "created_at": now,
        "updated_at": now,
    }
    bulk.copy_insert(
        Endorsement,
        _COPY_COLUMNS,
        (
            tuple(
                pk if c == "id" else json.dumps(v["details"]) if c == "details" else v[c] if c in v else constant[c]
                for c in _COPY_COLUMNS
            )
            for pk, v in zip(ids, values, strict=True)
        ),
    )
    bulk.copy_insert(
        EndorsementHistory,
        ("endorsement_id", "from_status", "to_status", "detail", "actor", "at"),
        ((pk, "", S.RECEIVED, detail, actor_label, now) for pk in ids),
    )
    return ids


@transaction.atomic
def endorsement_batch_cancel(*, batch: EndorsementBatch, actor: Actor) -> int:
    """Cancel every row of the batch not yet SENT; returns how many were cancelled."""
    rows = list(
        Endorsement.objects.select_for_update().filter(batch=batch, status__in=list(CANCELLABLE)).order_by("id")
    )
    held = {e.pk for e in rows if e.status == S.FUNDS_LOCKED}
    detail = f"batch cancelled by {actor.display}"
    transitions = _move_many([_Step(e, detail) for e in rows], S.CANCELLED, allowed_from=CANCELLABLE)
    by_id = {e.pk: e for e in rows}
    finished = [by_id[t.endorsement_id] for t in transitions]
    _release_holds([(e, "batch cancelled") for e in finished if e.pk in held], actor=actor)
    EndorsementBatch.objects.filter(pk=batch.pk, cancelled_at__isnull=True).update(cancelled_at=timezone.now())
    _record(transitions, actor=actor, endorsements={e.pk: e for e in rows})
    _on_terminal(finished)
    return len(transitions)
