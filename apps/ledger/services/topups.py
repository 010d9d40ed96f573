"""Top-ups (SPEC §6): money an employer paid in, credited to its account; wakes parked endorsements."""

from __future__ import annotations

from django.db import IntegrityError, transaction

from apps.audit.services import audit_record
from apps.common.actors import Actor
from apps.ledger.contracts import LedgerAuditAction
from apps.ledger.events import topup_posted_event_record
from apps.ledger.models import AccountKind, Direction, LedgerTransaction, TransactionKind
from apps.ledger.services.accounts import (
    _account_apply,
    _funds_available,
    _low_balance_track,
    _system_account_id,
    _transaction_existing,
    _transaction_replay,
    _transactions_insert,
    ledger_account_open,
)
from apps.ledger.services.types import _check_amount, _check_reference


def topup_post(*, employer_id: int, amount: int, reference: str, actor: Actor) -> LedgerTransaction:
    """Credit the employer's account `amount` paise, debit top-up clearing; wakes parked endorsements
    (`ledger.funds_available`). Atomic; idempotent by `reference` (unique per kind).

    1. Replay: a top-up with this reference already exists → return it (other terms → `ReferenceConflict`).
    2. Resolve the employer account (created on first use; `UnknownEmployer`) and the system account, outside
       the lock. `InvalidLedgerRequest` for a malformed amount or reference.
    3. In one transaction (`_topup_write`): the balance UPDATE (row lock, first), the transaction row, both
       entries, the audit row, the partner event, the low-balance flag and the `ledger.funds_available` event.
    4. A concurrent twin that got past step 1 fails on the (kind, reference) unique constraint; its
       transaction rolls back and it returns the winner's transaction.
    """
    _check_amount(amount)
    _check_reference(reference)
    existing = _transaction_existing(TransactionKind.TOPUP, reference)
    if existing is not None:
        return _transaction_replay(existing, employer_id=employer_id, amount=amount)
    account_id = ledger_account_open(employer_id=employer_id).pk
    system_account_id = _system_account_id(AccountKind.TOPUP_CLEARING)
    try:
        return _topup_write(
            employer_id=employer_id,
            account_id=account_id,
            system_account_id=system_account_id,
            amount=amount,
            reference=reference,
            actor=actor,
        )
    except IntegrityError:
        existing = _transaction_existing(TransactionKind.TOPUP, reference)
        if existing is None:
            raise
        return _transaction_replay(existing, employer_id=employer_id, amount=amount)


def _topup_write(
    *, employer_id: int, account_id: int, system_account_id: int, amount: int, reference: str, actor: Actor
) -> LedgerTransaction:
    kind = TransactionKind.TOPUP
    with transaction.atomic():
        state = _account_apply(account_id=account_id, posted_delta=amount)
        assert state is not None  # the account exists and nothing is required of it
        [txn] = _transactions_insert(
            [LedgerTransaction(kind=kind, reference=reference, employer_id=employer_id, amount=amount)],
            state=state,
            employer_direction=Direction.CREDIT,
            system_account_id=system_account_id,
        )
        audit_record(
            actor=actor,
            action=LedgerAuditAction.TOPUP_POSTED,
            object_type="ledger_transaction",
            object_id=txn.pk,
            employer_id=employer_id,
            after={
                "kind": kind,
                "reference": reference,
                "amount": amount,
                "endorsement_id": None,
                "posted": state.posted,
                "held": state.held,
            },
        )
        topup_posted_event_record(  # partner event (SPEC §10, issue 13)
            transaction_id=txn.pk,
            employer_id=employer_id,
            amount=amount,
            reference=reference,
            posted=state.posted,
            held=state.held,
        )
        _low_balance_track(state)
        _funds_available(state)
        return txn
