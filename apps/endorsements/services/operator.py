"""Actions on one endorsement outside the happy path: a partner's cancel, an operator's review decision and
retry, the insurer failing a batch, and the sweeps of parked debits (woken by funds, or expired)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.common.actors import Actor
from apps.common.errors import Conflict
from apps.endorsements.contracts import EndorsementTopic
from apps.endorsements.models import CANCELLABLE, Endorsement, EndorsementHistory
from apps.endorsements.services.funds import _fund_validated, _place_holds, _release_hold, _release_holds
from apps.endorsements.services.transitions import (
    S,
    Transition,
    _move,
    _move_many,
    _on_terminal,
    _record,
    _Step,
)
from apps.outbox.services import outbox_enqueue


@transaction.atomic
def endorsements_fail(
    *, ids: Sequence[int], reason: str, actor: Actor, rejection_class: str = "transient"
) -> list[Transition]:
    """The insurer could not take the batch: FAILED, hold released, error kept. An operator can retry once the
    cause is fixed.

    `rejection_class` is `transient` when the retry budget is spent and `configuration` when Keel cannot send
    at all (no adapter, bad config, missing credentials). Either way the reason is kept in `last_error`, the
    history and `rejection_reason` (≤ 500 chars), so the partner and operators see why (SPEC §8)."""
    endorsements = {e.pk: e for e in Endorsement.objects.select_for_update().filter(pk__in=ids, status=S.SENT)}
    # Say what happened (issue 11): a configuration failure never left Keel; a transient one ran out of retries
    # (the insurer answered 5xx or timed out, or the batch file could not be written: not always a refusal).
    cause = (
        "not sent, Keel cannot send to this insurer"
        if rejection_class == "configuration"
        else "gave up sending after retries"
    )
    detail = f"{cause}: {reason}"[:500]
    transitions = _move_many(
        [_Step(e, detail) for e in endorsements.values()],
        S.FAILED,
        allowed_from=[S.SENT],
        last_error=reason[:2000],
        rejection_class=rejection_class,
        rejection_reason=reason[:500],
    )
    finished = [endorsements[t.endorsement_id] for t in transitions]
    _release_holds([(e, "failed") for e in finished], actor=actor)
    _record(transitions, actor=actor, endorsements=endorsements)
    _on_terminal(finished)
    return transitions


@transaction.atomic
def endorsements_note_send_retry(*, ids: Sequence[int], attempt: int, reason: str, actor: Actor) -> int:
    """History of a transient send failure that will be retried (issue 11): each endorsement of `ids` still
    SENT gets one row `SENT → SENT` "send attempt <attempt> failed: <reason>; retrying", so a batch whose insurer
    answers 503, times out or whose file cannot be written does not sit SENT with no word of it.

    One row per endorsement per retry round (`attempt` is the dispatch message's failed-delivery count, and a
    round comes only after the outbox's backoff), never one per deferral. A redelivered round writes nothing
    again: the rows of `attempt` are looked for first. No audit row or partner event: the status did not
    change. Returns how many rows were written."""
    prefix = f"send attempt {attempt} failed"
    noted = set(
        EndorsementHistory.objects.filter(endorsement_id__in=ids, detail__startswith=prefix).values_list(
            "endorsement_id", flat=True
        )
    )
    still_sent = (
        Endorsement.objects.filter(pk__in=ids, status=S.SENT).exclude(pk__in=noted).values_list("pk", flat=True)
    )
    detail = f"{prefix}: {reason}; retrying"[:500]
    rows = [
        EndorsementHistory(
            endorsement_id=pk, from_status=S.SENT, to_status=S.SENT, detail=detail, actor=actor.display[:120]
        )
        for pk in still_sent
    ]
    EndorsementHistory.objects.bulk_create(rows, batch_size=1000)
    return len(rows)


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
    """Operator decision on an ON_HOLD_REVIEW endorsement: approve → continues (hold for debits), decline → REJECTED.

    Raises `Conflict` (409, `not-in-review`) when the endorsement is not ON_HOLD_REVIEW."""
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
    transitions += _fund_validated([e], actor=actor, now=timezone.now())
    _record(transitions, actor=actor, endorsements={e.pk: e})
    return e


@transaction.atomic
def endorsement_retry(*, endorsement: Endorsement, actor: Actor) -> Endorsement:
    """Operator retry of a FAILED endorsement: back to RECEIVED and through the pipeline again, with the same
    insurer idempotency key — so an insurer that did apply the first attempt does not apply it twice.

    Raises `Conflict` (409, `not-failed`) for an endorsement in any other status."""
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
        rejection_reason="",
        ready_at=None,
        sent_at=None,
        funding_generation=e.funding_generation + 1,
    )
    _record([t] if t else [], actor=actor, endorsements={e.pk: e})
    outbox_enqueue(topic=EndorsementTopic.PROCESS, payload={"ids": [e.pk]}, key=e.member_key)
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
