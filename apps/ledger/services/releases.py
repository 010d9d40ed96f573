"""Releases (SPEC §6): void holds (insurer rejection, cancel, failure), one lock round per employer account, the
same ORM statements on every database. A single release is a bulk of one (ADR 0036)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from django.db import IntegrityError, transaction

from apps.audit.services import audit_record
from apps.common.actors import Actor
from apps.ledger.contracts import LedgerAuditAction
from apps.ledger.models import HoldResolution, ResolutionKind
from apps.ledger.services.accounts import _account_apply, _funds_available, _low_balance_track
from apps.ledger.services.errors import HoldAlreadyCaptured
from apps.ledger.services.holds import _hold_rows, _HoldRow
from apps.ledger.services.types import _CHUNK, _check_reference


def hold_release(*, reference: str, actor: Actor, reason: str = "") -> HoldResolution:
    """`holds_release_bulk` with one reference (no SQL of its own, ADR 0036): the released resolution. Same
    replays and refusals (`HoldNotFound`, `HoldAlreadyCaptured`)."""
    return holds_release_bulk(reasons={reference: reason}, actor=actor)[reference]


def holds_release_bulk(*, reasons: Mapping[str, str], actor: Actor) -> dict[str, HoldResolution]:
    """Void holds ({reference: reason}, e.g. an insurer's rejections of a batch): `held` drops by each amount;
    no money moved, so no ledger transaction is written — the `HoldResolution` (kind released, reason cut to 200
    characters) is the record. Wakes parked endorsements (`ledger.funds_available`). One lock round per employer
    account. Returns {reference: resolution}.

    1. Read the holds and how they resolved. Unknown → `HoldNotFound`, captured → `HoldAlreadyCaptured`
       (nothing is written); released already → a replay (its resolution).
    2. Per account, in account-id order, inside a savepoint: one audit row, one UPDATE `held -= total` (the
       employer row lock), one bulk INSERT of the resolutions, the low-balance flag and one
       `ledger.funds_available` event (parked endorsements wake).
    3. A unique violation (a hold resolved concurrently) rolls that round back; it is retried once, and the
       holds resolved meanwhile are then replays (or refusals).
    """
    for reference in reasons:
        _check_reference(reference)
    out: dict[str, HoldResolution] = {}
    if not reasons:
        return out
    for account_id, holds in sorted(_holds_to_release(list(reasons), out).items()):
        try:
            out.update(_release_round(account_id, holds, reasons=reasons, actor=actor))
        except IntegrityError:
            again = _holds_to_release([h.reference for h in holds], out).get(account_id, [])
            if again:
                out.update(_release_round(account_id, again, reasons=reasons, actor=actor))
    return out


def _holds_to_release(references: Sequence[str], replays: dict[str, HoldResolution]) -> dict[int, list[_HoldRow]]:
    found = _hold_rows(references)
    by_account: dict[int, list[_HoldRow]] = {}
    released: list[int] = []
    for reference in references:
        hold = found[reference]
        if hold.resolution_kind == ResolutionKind.CAPTURED:
            raise HoldAlreadyCaptured(f"hold {reference!r} was captured; it cannot be released")
        if hold.resolution_kind is None:
            by_account.setdefault(hold.account_id, []).append(hold)
        else:
            released.append(hold.id)
    for start in range(0, len(released), _CHUNK):
        for resolution in HoldResolution.objects.filter(hold_id__in=released[start : start + _CHUNK]).select_related(
            "hold"
        ):
            replays[resolution.hold.reference] = resolution
    return by_account


def _release_round(
    account_id: int, holds: list[_HoldRow], *, reasons: Mapping[str, str], actor: Actor
) -> dict[str, HoldResolution]:
    total = sum(h.amount for h in holds)
    with transaction.atomic():
        audit_record(
            actor=actor,
            action=LedgerAuditAction.HOLDS_RELEASED,
            object_type="ledger_account",
            object_id=account_id,
            employer_id=holds[0].employer_id,
            after={"count": len(holds), "amount": total, "references": [h.reference for h in holds]},
        )
        state = _account_apply(account_id=account_id, held_delta=-total)
        assert state is not None
        resolutions = HoldResolution.objects.bulk_create(
            [
                HoldResolution(hold_id=h.id, kind=ResolutionKind.RELEASED, reason=reasons[h.reference][:200])
                for h in holds
            ],
            batch_size=_CHUNK,
        )
        _low_balance_track(state)
        _funds_available(state)
    return {h.reference: r for h, r in zip(holds, resolutions, strict=True)}
