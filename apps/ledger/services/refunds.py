"""Refunds (SPEC §6): credit employers for confirmed deletions and negative corrections, debit insurer payable;
one lock round per employer. A single refund is a bulk of one (ADR 0036)."""

from __future__ import annotations

from collections.abc import Sequence

from django.db import IntegrityError, transaction

from apps.audit.services import audit_record
from apps.common.actors import Actor
from apps.ledger.contracts import LedgerAuditAction
from apps.ledger.models import AccountKind, Direction, LedgerTransaction, TransactionKind
from apps.ledger.services.accounts import (
    _account_apply,
    _funds_available,
    _low_balance_track,
    _system_account_id,
    _transaction_replay,
    _transactions_insert,
    ledger_account_open,
)
from apps.ledger.services.errors import ReferenceConflict
from apps.ledger.services.types import _CHUNK, RefundRequest, _check_amount, _check_reference


def refund_post(
    *, employer_id: int, amount: int, reference: str, endorsement_id: int | None = None, actor: Actor
) -> LedgerTransaction:
    """`refunds_post_bulk` with one request (no SQL of its own, ADR 0036): the refund transaction (paise). Same
    replays and refusals (`InvalidLedgerRequest`, `UnknownEmployer`, `ReferenceConflict`)."""
    request = RefundRequest(employer_id=employer_id, amount=amount, reference=reference, endorsement_id=endorsement_id)
    return refunds_post_bulk(requests=[request], actor=actor)[reference]


def refunds_post_bulk(*, requests: Sequence[RefundRequest], actor: Actor) -> dict[str, LedgerTransaction]:
    """Credit employers for refunds (confirmed deletions of a batch; amounts in paise), debit insurer payable;
    wakes parked endorsements. One lock round per employer. Returns {reference: refund transaction}.

    1. Validate every request (nothing is written if one is malformed). References already posted are
       replays (the original transaction; other terms → `ReferenceConflict`); a reference repeated within the
       call gets the first occurrence's transaction.
    2. Per employer, in employer order, inside a savepoint: one audit row, one UPDATE `posted += total` (the
       row lock), the transactions and their entries (the employer side with its running `balance_after`,
       insurer payable on the other) as bulk INSERTs, the low-balance flag, one `ledger.funds_available`.
    3. A unique violation (the same reference posted concurrently) rolls that round back; it is retried once
       and those references are then replays.
    """
    for r in requests:
        _check_amount(r.amount)
        _check_reference(r.reference)
    wanted: dict[str, RefundRequest] = {}
    for r in requests:
        first = wanted.setdefault(r.reference, r)
        if first != r:
            raise ReferenceConflict(f"refund reference {r.reference!r} repeats with different terms")
    out: dict[str, LedgerTransaction] = {}
    if not wanted:
        return out
    by_employer = _refunds_to_post(list(wanted.values()), out)
    payable_id = _system_account_id(AccountKind.INSURER_PAYABLE)
    for employer_id, group in sorted(by_employer.items()):
        account_id = ledger_account_open(employer_id=employer_id).pk
        try:
            out.update(_refund_round(employer_id, account_id, group, payable_id=payable_id, actor=actor))
        except IntegrityError:
            again = _refunds_to_post(group, out).get(employer_id, [])
            if again:
                out.update(_refund_round(employer_id, account_id, again, payable_id=payable_id, actor=actor))
    return out


def _refunds_to_post(
    requests: Sequence[RefundRequest], replays: dict[str, LedgerTransaction]
) -> dict[int, list[RefundRequest]]:
    references = [r.reference for r in requests]
    existing: dict[str, LedgerTransaction] = {}
    for start in range(0, len(references), _CHUNK):
        existing.update(
            (t.reference, t)
            for t in LedgerTransaction.objects.filter(
                kind=TransactionKind.REFUND, reference__in=references[start : start + _CHUNK]
            )
        )
    by_employer: dict[int, list[RefundRequest]] = {}
    for r in requests:
        if r.reference in existing:
            replays[r.reference] = _transaction_replay(
                existing[r.reference], employer_id=r.employer_id, amount=r.amount, endorsement_id=r.endorsement_id
            )
        else:
            by_employer.setdefault(r.employer_id, []).append(r)
    return by_employer


def _refund_round(
    employer_id: int, account_id: int, group: list[RefundRequest], *, payable_id: int, actor: Actor
) -> dict[str, LedgerTransaction]:
    total = sum(r.amount for r in group)
    with transaction.atomic():
        audit_record(
            actor=actor,
            action=LedgerAuditAction.REFUNDS_POSTED,
            object_type="ledger_account",
            object_id=account_id,
            employer_id=employer_id,
            after={"count": len(group), "amount": total, "references": [r.reference for r in group]},
        )
        state = _account_apply(account_id=account_id, posted_delta=total)
        assert state is not None
        txns = _transactions_insert(
            [
                LedgerTransaction(
                    kind=TransactionKind.REFUND,
                    reference=r.reference,
                    employer_id=employer_id,
                    amount=r.amount,
                    endorsement_id=r.endorsement_id,
                )
                for r in group
            ],
            state=state,
            employer_direction=Direction.CREDIT,
            system_account_id=payable_id,
        )
        _low_balance_track(state)
        _funds_available(state)
    return {txn.reference: txn for txn in txns}
