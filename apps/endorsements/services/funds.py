"""The ledger side of an endorsement's funding: a validated debit takes a hold (→ FUNDS_LOCKED, or parked in
ON_HOLD_FUNDS until funds arrive), a credit or zero-priced one is ready at once; a debit that ends without
cover has its hold released. Capture and refund on activation live with the results (`results.py`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime

from apps.common.actors import Actor
from apps.endorsements.models import Endorsement, PremiumDirection
from apps.endorsements.services.transitions import S, Transition, _move_many, _Step
from apps.ledger import services as ledger
from apps.ledger.services import HoldRequest


def _fund_validated(endorsements: Sequence[Endorsement], *, actor: Actor, now: datetime) -> list[Transition]:
    """Route VALIDATED endorsements: credits and zero-priced ones are ready now (one UPDATE), debits take
    holds (`_place_holds`). Returns the hold transitions, not yet recorded."""
    to_hold: dict[int, list[Endorsement]] = defaultdict(list)
    ready_now = []
    for e in endorsements:
        if e.premium_direction == PremiumDirection.DEBIT:
            to_hold[e.employer_id].append(e)
        else:
            ready_now.append(e)
    _mark_ready(ready_now, now)
    return _place_holds(to_hold, actor=actor, now=now)


def _mark_ready(endorsements: Sequence[Endorsement], now: datetime) -> None:
    """Credits and zero-priced endorsements need no hold: ready to send at once."""
    if endorsements:
        Endorsement.objects.filter(pk__in=[e.pk for e in endorsements]).update(ready_at=now)
    for e in endorsements:
        e.ready_at = now


def _place_holds(to_hold: dict[int, list[Endorsement]], *, actor: Actor, now: datetime) -> list[Transition]:
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


def _release_hold(e: Endorsement, *, actor: Actor, reason: str) -> None:
    _release_holds([(e, reason)], actor=actor)


def _release_holds(items: Sequence[tuple[Endorsement, str]], *, actor: Actor) -> None:
    """Release the holds of debits that have one (one lock round per employer), each with its reason."""
    reasons = {e.hold_reference: reason[:200] for e, reason in items if e.premium_direction == PremiumDirection.DEBIT}
    held = ledger.holds_existing(references=list(reasons))
    ledger.holds_release_bulk(reasons={ref: why for ref, why in reasons.items() if ref in held}, actor=actor)
