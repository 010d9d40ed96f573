"""Holds (SPEC §6): reserve part of an employer's `available` for endorsements in flight, many at once under one
lock round (a single hold is a bulk of one, ADR 0036); and the plain read of holds that captures and releases
resolve."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import OuterRef, Subquery

from apps.audit.services import audit_record
from apps.common.actors import Actor
from apps.ledger.contracts import LedgerAuditAction
from apps.ledger.metrics import holds_placed
from apps.ledger.models import AccountKind, Hold, HoldResolution, LedgerAccount
from apps.ledger.services.accounts import _account_apply, _low_balance_track
from apps.ledger.services.errors import HoldNotFound, LedgerError, ReferenceConflict
from apps.ledger.services.types import _CHUNK, HoldRequest, HoldResult, _check_amount, _check_reference


def hold_place(
    *, employer_id: int, amount: int, reference: str, endorsement_id: int | None = None, actor: Actor
) -> HoldResult:
    """`holds_place_bulk` with one request (no SQL of its own, ADR 0036): hold `amount` paise of the employer's
    `available` if it fits. Same results, replays and refusals (`InvalidLedgerRequest`, `ReferenceConflict`)."""
    request = HoldRequest(reference=reference, amount=amount, endorsement_id=endorsement_id)
    [result] = holds_place_bulk(employer_id=employer_id, requests=[request], actor=actor)
    return result


def holds_place_bulk(*, employer_id: int, requests: Sequence[HoldRequest], actor: Actor) -> list[HoldResult]:
    """Place many holds for one employer with one lock round, first-fit in the given (FIFO) order.

    Also "park and wake": the endorsements app calls it with its parked endorsements, oldest first, when
    `ledger.funds_available` arrives. Returns one result per request, in order.

    1. Validate every request (nothing is written if one is malformed).
    2. Find which references already hold (replays: reported placed, nothing written) — before taking the
       lock, see step 6 for a reference placed meanwhile.
    3. In one transaction: lock the employer's account row (`SELECT … FOR UPDATE`; SQLite's IMMEDIATE
       transaction already serialises writers).
    4. Walk the new requests in order: place each that fits what is still available, skip each that does not
       — a large one at the head never blocks smaller ones behind it. A reference repeated within the batch
       gets the first occurrence's outcome.
    5. One conditional UPDATE of `held` by the total (its `posted - held >= total` cannot fail under the lock;
       it is the database's own check), bulk INSERT of the holds, one audit row, the low-balance crossing.
    6. A unique violation (the same reference placed concurrently for another account) rolls the round back
       and it is retried: the reference is then a replay (or a `ReferenceConflict`).
    """
    for request in requests:
        _check_amount(request.amount)
        _check_reference(request.reference)
    if not requests:
        return []
    for attempt in range(3):
        try:
            return _holds_place_bulk_round(employer_id=employer_id, requests=requests, actor=actor)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _holds_by_reference(references: Sequence[str]) -> dict[str, Hold]:
    """The holds already placed under `references` (with their account), chunked."""
    existing: dict[str, Hold] = {}
    for start in range(0, len(references), _CHUNK):
        chunk = references[start : start + _CHUNK]
        existing.update((h.reference, h) for h in Hold.objects.filter(reference__in=chunk).select_related("account"))
    return existing


def _holds_place_bulk_round(*, employer_id: int, requests: Sequence[HoldRequest], actor: Actor) -> list[HoldResult]:
    # Read outside the lock: a hold never disappears, and one placed concurrently after this read makes the
    # bulk INSERT below fail on the unique reference, so the round is retried and then sees it.
    existing = _holds_by_reference(list(dict.fromkeys(r.reference for r in requests)))
    with transaction.atomic():
        account = (
            LedgerAccount.objects.select_for_update()
            .filter(kind=AccountKind.EMPLOYER, employer_id=employer_id)
            .only("id", "posted", "held")
            .first()
        )
        remaining = account.posted - account.held if account is not None else 0
        decided: dict[str, tuple[HoldRequest, Hold | None]] = {}
        new_holds: list[Hold] = []
        results: list[tuple[HoldRequest, int]] = []  # (request, available after it), resolved to holds below
        for request in requests:
            hold_terms = (request.amount, request.endorsement_id)
            if request.reference in existing:
                previous = existing[request.reference]
                _hold_replay_check(previous, employer_id=employer_id, request=request)
            elif request.reference in decided:
                first, _ = decided[request.reference]
                if (first.amount, first.endorsement_id) != hold_terms:
                    raise ReferenceConflict(f"hold reference {request.reference!r} repeats with different terms")
            elif account is not None and request.amount <= remaining:
                remaining -= request.amount
                hold = Hold(
                    reference=request.reference,
                    account_id=account.pk,
                    amount=request.amount,
                    endorsement_id=request.endorsement_id,
                )
                new_holds.append(hold)
                decided[request.reference] = (request, hold)
            else:
                decided[request.reference] = (request, None)
            results.append((request, remaining))
        total = sum(h.amount for h in new_holds)
        if new_holds:
            assert account is not None
            state = _account_apply(account_id=account.pk, held_delta=total, require_available=total)
            if state is None:  # impossible under the row lock; refuse rather than overdraw
                raise LedgerError(f"employer {employer_id}: bulk hold of {total} no longer fits")
            Hold.objects.bulk_create(new_holds, batch_size=_CHUNK)
            holds_placed(len(new_holds))
            audit_record(
                actor=actor,
                action=LedgerAuditAction.HOLDS_PLACED,
                object_type="ledger_account",
                object_id=account.pk,
                employer_id=employer_id,
                after={"count": len(new_holds), "amount": total, "references": [h.reference for h in new_holds]},
            )
            _low_balance_track(state)
        out: list[HoldResult] = []
        for request, available_after in results:
            placed_hold = existing.get(request.reference) or decided[request.reference][1]
            out.append(HoldResult(placed=placed_hold is not None, hold=placed_hold, available_after=available_after))
        return out


def _hold_replay_check(existing: Hold, *, employer_id: int, request: HoldRequest) -> None:
    if existing.account.employer_id != employer_id or existing.amount != request.amount:
        raise ReferenceConflict(f"hold reference {existing.reference!r} was already used with different terms")


@dataclass(frozen=True, slots=True)
class _HoldRow:
    """What resolving a hold needs, read as plain values (`_hold_rows`, no model instances): the hold, its
    employer, how it resolved (None while open). The resolution's own row is read only for a replay."""

    id: int
    reference: str
    account_id: int
    amount: int
    endorsement_id: int | None
    employer_id: int
    resolution_kind: str | None


def _hold_rows(references: Sequence[str]) -> dict[str, _HoldRow]:
    """The holds of `references` as plain rows with how they resolved (chunked); `HoldNotFound` for any unknown."""
    found: dict[str, _HoldRow] = {}
    # Correlated subqueries: index lookups per hold whatever the planner's statistics say (a join here can
    # turn into a scan of every resolution).
    rows = Hold.objects.annotate(
        employer_id=Subquery(LedgerAccount.objects.filter(pk=OuterRef("account_id")).values("employer_id")),
        resolution_kind=Subquery(HoldResolution.objects.filter(hold_id=OuterRef("pk")).values("kind")),
    )
    columns = ("id", "account_id", "amount", "endorsement_id", "employer_id", "resolution_kind")
    for start in range(0, len(references), _CHUNK):
        chunk = references[start : start + _CHUNK]
        for reference, *values in rows.filter(reference__in=chunk).values_list("reference", *columns):
            hold_id, account_id, amount, endorsement_id, employer_id, resolution_kind = values
            found[reference] = _HoldRow(
                id=hold_id,
                reference=reference,
                account_id=account_id,
                amount=amount,
                endorsement_id=endorsement_id,
                employer_id=employer_id,
                resolution_kind=resolution_kind,
            )
    for reference in references:
        if reference not in found:
            raise HoldNotFound(f"no hold with reference {reference!r}")
    return found


def holds_existing(*, references: Sequence[str]) -> set[str]:
    """Which of `references` name a hold (one query per 5,000)."""
    found: set[str] = set()
    for start in range(0, len(references), _CHUNK):
        found.update(
            Hold.objects.filter(reference__in=references[start : start + _CHUNK]).values_list("reference", flat=True)
        )
    return found
