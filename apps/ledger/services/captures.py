"""Captures (SPEC §6): turn holds into posted debits on the insurer's confirmation, one lock round per employer
account — one statement on PostgreSQL (`_HOLDS_CAPTURE_SQL`), the same steps through the ORM on SQLite
(`_capture_round_orm`). A single capture is a bulk of one (ADR 0036)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.common.actors import Actor
from apps.ledger.contracts import LedgerAuditAction
from apps.ledger.models import (
    AccountKind,
    Direction,
    HoldResolution,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    ResolutionKind,
    TransactionKind,
)
from apps.ledger.services.accounts import (
    _account_apply,
    _account_state,
    _AccountState,
    _is_postgres,
    _loaded,
    _low_balance_track,
    _returning_sql,
    _system_account_id,
    _transactions_insert,
)
from apps.ledger.services.errors import HoldAlreadyReleased
from apps.ledger.services.holds import _hold_rows, _HoldRow
from apps.ledger.services.types import _CHUNK, _check_reference

# --- the capture round on PostgreSQL: one statement ---------------------------------------------------------
#
# On one hot employer, throughput is bounded by how long each round holds that employer's account row (from its
# UPDATE until COMMIT returns). So on PostgreSQL a capture round writes everything that follows the balance
# change in ONE data-modifying CTE whose first part is the UPDATE (the row lock — still the first lock taken) and
# whose other parts INSERT the capture transactions, their two entries each and the resolutions from the
# UPDATE's RETURNING. These are the INSERTs the ORM would write (same columns; `created_at` set here as
# `auto_now_add` would), spelled in SQL because Django cannot chain writes through RETURNING. Unique constraints
# fire inside the statement exactly as for separate INSERTs, so every race and replay rule is unchanged. SQLite
# (`make run`, one writer at a time) has no data-modifying CTEs: it takes the same steps through the ORM.

_ACCOUNT_TABLE = LedgerAccount._meta.db_table
_RESOLUTION_TABLE = HoldResolution._meta.db_table
_TRANSACTION_TABLE = LedgerTransaction._meta.db_table
_ENTRY_TABLE = LedgerEntry._meta.db_table
# The CTE's columns are what `_account_state` reads from the first six columns of the statement's rows.
_ACCOUNT_CTE = "account (id, employer_id, posted, held, low_balance, threshold)"

# The holds are passed as arrays in capture order. Each employer entry's `balance_after` is the running balance
# (the `posted` before the round minus the captures so far); rows are inserted in that order, so entry ids
# follow the running balance.
_HOLDS_CAPTURE_SQL = f"""
WITH {_ACCOUNT_CTE} AS (
    UPDATE {_ACCOUNT_TABLE} SET posted = posted - %(total)s, held = held - %(total)s
    WHERE id = %(account_id)s
    {_returning_sql()}
), holds AS (
    SELECT h.n, h.hold_id, h.reference, h.amount, h.endorsement_id,
           account.posted + %(total)s - sum(h.amount) OVER (ORDER BY h.n) AS balance_after
    FROM unnest(%(hold_ids)s::bigint[], %(references)s::text[], %(amounts)s::bigint[], %(endorsement_ids)s::bigint[])
         WITH ORDINALITY AS h (hold_id, reference, amount, endorsement_id, n)
    CROSS JOIN account
), txn AS (
    INSERT INTO {_TRANSACTION_TABLE} (kind, reference, employer_id, amount, endorsement_id, created_at)
    SELECT %(kind)s, holds.reference, account.employer_id, holds.amount, holds.endorsement_id, %(now)s
    FROM holds CROSS JOIN account ORDER BY holds.n
    RETURNING id, reference
), entries AS (
    INSERT INTO {_ENTRY_TABLE} (transaction_id, account_id, direction, amount, balance_after, created_at)
    SELECT txn.id, side.account_id, side.direction, holds.amount, side.balance_after, %(now)s
    FROM txn JOIN holds USING (reference) CROSS JOIN account
    CROSS JOIN LATERAL (
        VALUES (1, account.id, %(debit)s, holds.balance_after), (2, %(payable_id)s::bigint, %(credit)s, NULL::bigint)
    ) AS side (n, account_id, direction, balance_after)
    ORDER BY holds.n, side.n
), resolution AS (
    INSERT INTO {_RESOLUTION_TABLE} (hold_id, kind, transaction_id, reason, resolved_at)
    SELECT holds.hold_id, %(captured)s, txn.id, '', %(now)s FROM txn JOIN holds USING (reference) ORDER BY holds.n
)
SELECT account.*, txn.id, txn.reference FROM account, txn
"""  # noqa: S608 — table names come from model metadata; every value is a bound parameter


def hold_capture(*, reference: str, actor: Actor) -> LedgerTransaction:
    """`holds_capture_bulk` with one reference (no SQL of its own, ADR 0036): the capture transaction (paise).
    Same replays and refusals (`HoldNotFound`, `HoldAlreadyReleased`)."""
    return holds_capture_bulk(references=[reference], actor=actor)[reference]


def holds_capture_bulk(*, references: Sequence[str], actor: Actor) -> dict[str, LedgerTransaction]:
    """Turn holds into posted debits (an insurer's confirmations of a batch): per hold, `held` and `posted` both
    drop by its amount (so `available` does not move), insurer payable is credited, the hold resolves as
    captured. One lock round per employer account. Returns {reference: capture transaction}.

    1. Read the holds and how they resolved, as plain rows (chunked). An unknown reference → `HoldNotFound`, a
       released hold → `HoldAlreadyReleased` (nothing is written); a captured one is a replay (its transaction,
       read only then).
    2. Per account, in account-id order (a fixed lock order, so two bulk captures cannot deadlock), inside a
       savepoint: the round's audit row (no contended lock), then one UPDATE `posted -= total, held -= total`
       (the employer row lock, the first lock taken) with the INSERTs of the capture transactions, their
       entries (the employer side with its running `balance_after`, in id order) and the resolutions — one
       statement on PostgreSQL (`_HOLDS_CAPTURE_SQL`), bulk INSERTs elsewhere — then the low-balance flag.
    3. A unique violation (the same hold captured concurrently) rolls that account's round back and it is
       retried once: those holds are then replays.
    """
    wanted = list(dict.fromkeys(references))
    for reference in wanted:
        _check_reference(reference)
    out: dict[str, LedgerTransaction] = {}
    if not wanted:
        return out
    by_account = _holds_to_capture(wanted, out)
    if not by_account:
        return out
    payable_id = _system_account_id(AccountKind.INSURER_PAYABLE)
    for account_id in sorted(by_account):
        holds = by_account[account_id]
        try:
            out.update(_capture_round(account_id, holds, payable_id=payable_id, actor=actor))
        except IntegrityError:
            retry: dict[str, LedgerTransaction] = {}
            again = _holds_to_capture([h.reference for h in holds], retry).get(account_id, [])
            out.update(retry)
            if again:
                out.update(_capture_round(account_id, again, payable_id=payable_id, actor=actor))
    return out


def _holds_to_capture(references: Sequence[str], replays: dict[str, LedgerTransaction]) -> dict[int, list[_HoldRow]]:
    """Unresolved holds of `references` grouped by account (in the given order), as plain rows; fills `replays`
    with the captures already made; raises for unknown or released holds."""
    found = _hold_rows(references)
    by_account: dict[int, list[_HoldRow]] = {}
    captured: list[str] = []
    for reference in references:
        hold = found[reference]
        if hold.resolution_kind == ResolutionKind.RELEASED:
            raise HoldAlreadyReleased(f"hold {reference!r} was released; it cannot be captured")
        if hold.resolution_kind is None:
            by_account.setdefault(hold.account_id, []).append(hold)
        else:
            captured.append(reference)
    for start in range(0, len(captured), _CHUNK):  # replays: the captures' own rows, read only when there are any
        chunk = captured[start : start + _CHUNK]
        replays.update(
            (txn.reference, txn)
            for txn in LedgerTransaction.objects.filter(kind=TransactionKind.CAPTURE, reference__in=chunk)
        )
    return by_account


def _capture_round(
    account_id: int, holds: list[_HoldRow], *, payable_id: int, actor: Actor
) -> dict[str, LedgerTransaction]:
    total = sum(h.amount for h in holds)
    with transaction.atomic():
        # The audit row first: it takes no contended lock, so the employer row is locked only from the UPDATE.
        audit_record(
            actor=actor,
            action=LedgerAuditAction.HOLDS_CAPTURED,
            object_type="ledger_account",
            object_id=account_id,
            employer_id=holds[0].employer_id,
            after={"count": len(holds), "amount": total, "references": [h.reference for h in holds]},
        )
        if _is_postgres():
            state, txns = _capture_round_write(account_id, holds, total=total, payable_id=payable_id)
        else:
            state, txns = _capture_round_orm(account_id, holds, total=total, payable_id=payable_id)
        _low_balance_track(state)
    return {txn.reference: txn for txn in txns}


def _capture_round_write(
    account_id: int, holds: list[_HoldRow], *, total: int, payable_id: int
) -> tuple[_AccountState, list[LedgerTransaction]]:
    """A capture round in one statement (`_HOLDS_CAPTURE_SQL`): the UPDATE, the transactions, their entries with
    the running `balance_after` and the resolutions."""
    now = timezone.now()
    params: dict[str, Any] = {
        "total": total,
        "account_id": account_id,
        "hold_ids": [h.id for h in holds],
        "references": [h.reference for h in holds],
        "amounts": [h.amount for h in holds],
        "endorsement_ids": [h.endorsement_id for h in holds],
        "kind": TransactionKind.CAPTURE.value,
        "debit": Direction.DEBIT.value,
        "credit": Direction.CREDIT.value,
        "payable_id": payable_id,
        "captured": ResolutionKind.CAPTURED.value,
        "now": now,
    }
    with connection.cursor() as cursor:
        cursor.execute(_HOLDS_CAPTURE_SQL, params)
        rows = cursor.fetchall()
    state = _account_state(rows[0] if rows else None)
    assert state is not None  # the account exists and nothing is required of it
    txn_ids = {reference: txn_id for *_, txn_id, reference in rows}
    txns = [
        _loaded(
            LedgerTransaction(
                id=txn_ids[h.reference],
                kind=TransactionKind.CAPTURE,
                reference=h.reference,
                employer_id=state.employer_id,
                amount=h.amount,
                endorsement_id=h.endorsement_id,
                created_at=now,
            )
        )
        for h in holds
    ]
    return state, txns


def _capture_round_orm(
    account_id: int, holds: list[_HoldRow], *, total: int, payable_id: int
) -> tuple[_AccountState, list[LedgerTransaction]]:
    """`_capture_round_write` step by step through the ORM (SQLite)."""
    state = _account_apply(account_id=account_id, posted_delta=-total, held_delta=-total)
    assert state is not None
    txns = _transactions_insert(
        [
            LedgerTransaction(
                kind=TransactionKind.CAPTURE,
                reference=h.reference,
                employer_id=state.employer_id,
                amount=h.amount,
                endorsement_id=h.endorsement_id,
            )
            for h in holds
        ],
        state=state,
        employer_direction=Direction.DEBIT,
        system_account_id=payable_id,
    )
    HoldResolution.objects.bulk_create(
        [
            HoldResolution(hold_id=h.id, kind=ResolutionKind.CAPTURED, transaction=txn)
            for h, txn in zip(holds, txns, strict=True)
        ],
        batch_size=_CHUNK,
    )
    return state, txns
