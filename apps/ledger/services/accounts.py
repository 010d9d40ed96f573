"""Accounts and what every posting shares: the employer account (opened on first use), the system accounts,
the one balance UPDATE that locks and changes an employer row, the low-balance crossing and the
funds-available event, and the bulk INSERT of transactions with their mirrored entries (ADR 0008)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import IntegrityError, connection, transaction
from django.db.models import Model

from apps.employers.selectors import EMPLOYERS_TABLE, employer_exists
from apps.ledger.contracts import LedgerTopic
from apps.ledger.events import low_balance_event_record
from apps.ledger.metrics import transactions_committed
from apps.ledger.models import AccountKind, Direction, LedgerAccount, LedgerEntry, LedgerTransaction
from apps.ledger.services.errors import ReferenceConflict, UnknownEmployer
from apps.ledger.services.types import _CHUNK
from apps.outbox.services import outbox_enqueue


@dataclass(frozen=True, slots=True)
class _AccountState:
    """An employer account row as the UPDATE left it (still locked by this transaction)."""

    id: int
    employer_id: int
    posted: int
    held: int
    low_balance: bool
    threshold: int

    @property
    def available(self) -> int:
        return self.posted - self.held


def _returning_sql() -> str:
    account = LedgerAccount._meta.db_table
    employer = EMPLOYERS_TABLE
    template = (
        " RETURNING id, employer_id, posted, held, low_balance,"
        " (SELECT e.low_balance_threshold FROM {employer} e WHERE e.id = {account}.employer_id)"
    )
    return template.format(employer=employer, account=account)


def _account_state(row: tuple[Any, ...] | None) -> _AccountState | None:
    if row is None:
        return None
    return _AccountState(
        id=int(row[0]),
        employer_id=int(row[1]),
        posted=int(row[2]),
        held=int(row[3]),
        low_balance=bool(row[4]),
        threshold=int(row[5] or 0),
    )


def _account_apply(
    *,
    posted_delta: int = 0,
    held_delta: int = 0,
    account_id: int | None = None,
    employer_id: int | None = None,
    require_available: int | None = None,
) -> _AccountState | None:
    """Change an employer account's cached balances with one conditional UPDATE and return its new state.

    1. `UPDATE … SET posted = posted + Δp, held = held + Δh WHERE <the account>` — this takes the row lock
       (the first and only lock of every ledger operation), so no read-modify-write race exists.
    2. With `require_available=x` the WHERE adds `posted - held >= x`: on PostgreSQL a concurrent writer that
       waited for the lock re-evaluates it against the committed row (READ COMMITTED re-check), so two holds
       can never both take the last rupee; on SQLite writers are serialised anyway. No row → `None`.
    3. RETURNING gives the new balances and the employer's low-balance threshold in the same round trip.
    """
    table = LedgerAccount._meta.db_table
    params: list[Any] = [posted_delta, held_delta]
    if account_id is not None:
        where = "id = %s"
        params.append(account_id)
    else:
        where = "employer_id = %s AND kind = %s"
        params += [employer_id, AccountKind.EMPLOYER.value]
    if require_available is not None:
        where += " AND posted - held >= %s"
        params.append(require_available)
    sql = f"UPDATE {table} SET posted = posted + %s, held = held + %s WHERE {where}" + _returning_sql()  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return _account_state(cursor.fetchone())


def _available_now(employer_id: int) -> int:
    row = (
        LedgerAccount.objects.filter(kind=AccountKind.EMPLOYER, employer_id=employer_id)
        .values_list("posted", "held")
        .first()
    )
    return row[0] - row[1] if row else 0


def _low_balance_track(state: _AccountState) -> None:
    """Flip `low_balance` when `available` crosses the employer's threshold; one event per downward crossing.

    1. The UPDATE that changed the balance returned the old flag and the new balances, and this transaction
       still holds the row lock, so the decision below cannot race another writer.
    2. Crossing down (available < threshold, flag clear): a conditional UPDATE `… WHERE low_balance = false`
       sets the flag, and only when it changed a row is `ledger.low_balance` enqueued — same transaction.
    3. Crossing back up clears the flag the same way (no event). No crossing → no query at all.
    """
    available = state.available
    if available < state.threshold and not state.low_balance:
        flipped = LedgerAccount.objects.filter(pk=state.id, low_balance=False).update(low_balance=True)
        if flipped:
            low_balance_event_record(  # partner event (SPEC §10, issue 13)
                employer_id=state.employer_id, available=available, threshold=state.threshold
            )
            outbox_enqueue(
                topic=LedgerTopic.LOW_BALANCE,
                payload={"employer_id": state.employer_id, "available": available, "threshold": state.threshold},
                key=f"employer:{state.employer_id}",
            )
    elif available >= state.threshold and state.low_balance:
        LedgerAccount.objects.filter(pk=state.id, low_balance=True).update(low_balance=False)


def _funds_available(state: _AccountState) -> None:
    outbox_enqueue(
        topic=LedgerTopic.FUNDS_AVAILABLE,
        payload={"employer_id": state.employer_id, "available": state.available},
        key=f"employer:{state.employer_id}",
    )


def _system_account_id(kind: str) -> int:
    """The system account of `kind`, created on first use (race-safe: a partial unique constraint decides)."""
    found = LedgerAccount.objects.filter(kind=kind, employer__isnull=True).values_list("pk", flat=True).first()
    if found is not None:
        return found
    try:
        with transaction.atomic():
            return LedgerAccount.objects.create(kind=kind).pk
    except IntegrityError:
        return LedgerAccount.objects.filter(kind=kind, employer__isnull=True).values_list("pk", flat=True).get()


def _transaction_existing(kind: str, reference: str) -> LedgerTransaction | None:
    return LedgerTransaction.objects.filter(kind=kind, reference=reference).first()


def _transaction_replay(
    existing: LedgerTransaction, *, employer_id: int, amount: int, endorsement_id: int | None = None
) -> LedgerTransaction:
    if existing.employer_id != employer_id or existing.amount != amount or existing.endorsement_id != endorsement_id:
        raise ReferenceConflict(
            f"reference {existing.reference!r} was already used for a different {existing.kind} "
            f"(employer, amount or endorsement differ)"
        )
    return existing


def _is_postgres() -> bool:
    return connection.vendor == "postgresql"


_M = TypeVar("_M", bound=Model)


def _loaded(instance: _M) -> _M:
    """Mark an instance built from values this transaction just wrote as a saved row (what `from_db` does)."""
    instance._state.adding = False
    instance._state.db = connection.alias
    return instance


def _transactions_insert(
    txns: list[LedgerTransaction], *, state: _AccountState, employer_direction: str, system_account_id: int
) -> list[LedgerTransaction]:
    """Bulk-insert transactions that one balance UPDATE (now `state`) already applied, with their two mirrored
    entries each: the employer side carries the running `balance_after`, in insertion (= id) order, so the last
    one equals `state.posted`."""
    txns = LedgerTransaction.objects.bulk_create(txns, batch_size=_CHUNK)
    transactions_committed([t.kind for t in txns])
    sign = 1 if employer_direction == Direction.CREDIT else -1
    other = Direction.DEBIT if employer_direction == Direction.CREDIT else Direction.CREDIT
    running = state.posted - sign * sum(t.amount for t in txns)
    entries: list[LedgerEntry] = []
    for txn in txns:
        running += sign * txn.amount
        entries.append(
            LedgerEntry(
                transaction=txn,
                account_id=state.id,
                direction=employer_direction,
                amount=txn.amount,
                balance_after=running,
            )
        )
        entries.append(LedgerEntry(transaction=txn, account_id=system_account_id, direction=other, amount=txn.amount))
    LedgerEntry.objects.bulk_create(entries, batch_size=_CHUNK)
    return txns


def ledger_account_open(*, employer_id: int) -> LedgerAccount:
    """The employer's endorsement account, created on first use.

    Race-safe: two concurrent first uses both try to INSERT inside a savepoint; the partial unique constraint
    (one endorsement account per employer) lets one win and the loser reads the winner's row.
    """
    account = LedgerAccount.objects.filter(kind=AccountKind.EMPLOYER, employer_id=employer_id).first()
    if account is not None:
        return account
    if not employer_exists(employer_id):
        raise UnknownEmployer(f"no employer {employer_id}")
    try:
        with transaction.atomic():
            return LedgerAccount.objects.create(kind=AccountKind.EMPLOYER, employer_id=employer_id)
    except IntegrityError:
        return LedgerAccount.objects.get(kind=AccountKind.EMPLOYER, employer_id=employer_id)
