"""The scheduler (SPEC §7, ADR 0012): ready endorsements → SENT, per insurer, in tumbling windows, credits
first, one `endorsements.dispatch` event per batch."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.db import transaction
from django.db.models import Case, Count, IntegerField, Min, Q, Value, When
from django.utils import timezone

from apps.common.actors import Actor
from apps.endorsements.contracts import EndorsementTopic
from apps.endorsements.models import Endorsement, PremiumDirection
from apps.endorsements.services.transitions import S, _move_many, _record, _Step
from apps.insurers.selectors import insurer_get
from apps.outbox.services import outbox_enqueue

if TYPE_CHECKING:
    from apps.insurers.models import Insurer

READY = Q(status__in=[S.VALIDATED, S.FUNDS_LOCKED], ready_at__isnull=False)


def scheduler_tick(*, actor: Actor, force: bool = False, now: datetime | None = None) -> int:
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
        insurer = insurer_get(row["insurer_id"])
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
    # Handed to the gateway, not yet sent: the dispatch consumer calls the insurer after this commits, and may
    # find it cannot (configuration) or must retry (issue 11). Its history says which.
    detail = f"handed to {insurer.code}'s gateway"
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
            topic=EndorsementTopic.DISPATCH,
            payload={"insurer_code": insurer.code, "ids": ordered},
            key=None,  # no ordering key: see apps/endorsements/dispatch.py (issue 10)
        )
    return len(ordered)
