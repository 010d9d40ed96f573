"""Ledger operations (SPEC §6, docs/adr/0008-ledger.md).

Every operation is atomic and idempotent by its reference: a retried call with the same reference returns the
original result and writes nothing; the same reference with different parameters raises `ReferenceConflict`.

Locking, in one sentence: the employer's own account row is the only row any operation locks, it is always the
first lock an operation takes, and it is taken by the UPDATE that changes it. System accounts carry no cached
balance (their balance is Σ of their entries), so employers never wait on each other.

Balances change in the database, not in Python: one `UPDATE … SET posted = posted + %s, held = held + %s WHERE
id = %s [AND posted - held >= %s] RETURNING …` per operation. It is the F-expression update the ORM would write,
spelled in SQL only because Django's `update()` cannot return the new values (we need them for `balance_after`,
`available_after` and the low-balance crossing without a second round trip while the row is locked). On PostgreSQL
the single-hold operations put that UPDATE at the head of one data-modifying statement that also writes the rows
following from it (see "the single-operation hot path" below), so the row is locked for that statement and the
COMMIT only. The CHECK constraints (`held >= 0`, `posted - held >= 0` on employer accounts) are the last line of
defence; the unique constraints on (kind, reference), Hold.reference and HoldResolution.hold make a lost race
fail instead of double-applying.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from django.db import IntegrityError, connection, transaction
from django.db.models import Model, OuterRef, Subquery
from django.utils import timezone

from apps.audit.services import audit_record
from apps.common.actors import Actor
from apps.employers.models import Employer
from apps.ledger.events import low_balance_event_record, topup_posted_event_record
from apps.ledger.models import (
    AccountKind,
    Direction,
    Hold,
    HoldResolution,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    ResolutionKind,
    TransactionKind,
)
from apps.ledger.selectors import VerifyReport, ledger_verify
from apps.outbox.services import outbox_enqueue

__all__ = [
    "HoldAlreadyCaptured",
    "HoldAlreadyReleased",
    "HoldAlreadyResolved",
    "HoldNotFound",
    "HoldRequest",
    "HoldResult",
    "LedgerError",
    "LedgerTopic",
    "ReferenceConflict",
    "RefundRequest",
    "UnknownEmployer",
    "VerifyReport",
    "hold_capture",
    "hold_place",
    "hold_release",
    "holds_capture_bulk",
    "holds_existing",
    "holds_place_bulk",
    "holds_release_bulk",
    "ledger_account_open",
    "ledger_verify",
    "refund_post",
    "refunds_post_bulk",
    "topup_post",
]

MAX_REFERENCE_LENGTH = 200
# `reference__in` lookups and bulk inserts are chunked below PostgreSQL's 65,535 bind-parameter limit.
_CHUNK = 5000


class LedgerTopic:
    """Outbox topics the ledger publishes. Values never change meaning once shipped."""

    # {employer_id, available}: a top-up, refund or release added to `available` (park and wake, §6/§7).
    FUNDS_AVAILABLE = "ledger.funds_available"
    # {employer_id, available, threshold}: `available` crossed below the threshold (once per crossing). The
    # e-mail consumer lives in handlers.py; the partner webhook (§10) will carry this payload as it is.
    LOW_BALANCE = "ledger.low_balance"


class LedgerError(Exception):
    """Base class of every ledger refusal."""


class InvalidLedgerRequest(LedgerError, ValueError):
    """Amount not a positive integer, or an empty/too long reference."""


class UnknownEmployer(LedgerError):
    pass


class ReferenceConflict(LedgerError):
    """The reference was already used for an operation with different parameters."""


class HoldNotFound(LedgerError):
    pass


class HoldAlreadyResolved(LedgerError):
    """The opposite resolution was asked of a hold that already resolved (a hold resolves exactly once)."""


class HoldAlreadyCaptured(HoldAlreadyResolved):
    pass


class HoldAlreadyReleased(HoldAlreadyResolved):
    pass


@dataclass(frozen=True, slots=True)
class HoldRequest:
    reference: str
    amount: int
    endorsement_id: int | None = None


@dataclass(frozen=True, slots=True)
class HoldResult:
    """`placed` False means nothing was written. A repeat of a placed reference reports the original hold."""

    placed: bool
    hold: Hold | None
    # The employer's `available` right after this request was decided (for a replay: now).
    available_after: int


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


# --- helpers -------------------------------------------------------------------------------------------------


def _check_amount(amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise InvalidLedgerRequest(f"amounts are positive integer paise, got {amount!r}")


def _check_reference(reference: str) -> None:
    if not isinstance(reference, str) or not reference.strip() or len(reference) > MAX_REFERENCE_LENGTH:
        raise InvalidLedgerRequest(f"a reference is 1–{MAX_REFERENCE_LENGTH} characters, got {reference!r}")


def _returning_sql() -> str:
    account = LedgerAccount._meta.db_table
    employer = Employer._meta.db_table
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


# --- the single-operation hot path on PostgreSQL -------------------------------------------------------------
#
# On one hot employer, throughput is bounded by how long each operation holds that employer's account row
# (from its UPDATE until COMMIT returns) and latency by Python work and round trips. So on PostgreSQL each
# single-hold operation writes everything that has to follow the balance change in ONE statement: a
# data-modifying CTE whose first part is the conditional UPDATE (the row lock — still the first lock taken)
# and whose other parts INSERT the hold, or the capture transaction with its two entries and the resolution,
# from the UPDATE's RETURNING (`balance_after` is the `posted` it returned, so entries stay consistent in id
# order: they are numbered under the lock). The row is then locked for that one statement and the COMMIT.
# These are the INSERTs the ORM would write (same columns; `created_at` set here as `auto_now_add` would),
# spelled in SQL because Django cannot chain writes through RETURNING. Unique constraints fire inside the
# statement exactly as they did for the separate INSERTs, so every race and replay rule is unchanged. SQLite
# (`make run`, one writer at a time) has no data-modifying CTEs: it takes the same steps through the ORM.

_ACCOUNT_TABLE = LedgerAccount._meta.db_table
_HOLD_TABLE = Hold._meta.db_table
_RESOLUTION_TABLE = HoldResolution._meta.db_table
_TRANSACTION_TABLE = LedgerTransaction._meta.db_table
_ENTRY_TABLE = LedgerEntry._meta.db_table
# The CTE's columns are what `_account_state` reads from the first six columns of each statement's row.
_ACCOUNT_CTE = "account (id, employer_id, posted, held, low_balance, threshold)"

_HOLD_PLACE_SQL = f"""
WITH {_ACCOUNT_CTE} AS (
    UPDATE {_ACCOUNT_TABLE} SET held = held + %(amount)s
    WHERE employer_id = %(employer_id)s AND kind = %(kind)s AND posted - held >= %(amount)s
    {_returning_sql()}
), hold AS (
    INSERT INTO {_HOLD_TABLE} (reference, account_id, amount, endorsement_id, created_at)
    SELECT %(reference)s, account.id, %(amount)s, %(endorsement_id)s, %(now)s FROM account
    RETURNING id
)
SELECT account.*, hold.id FROM account, hold
"""  # noqa: S608 — table names come from model metadata; every value is a bound parameter

_HOLD_CAPTURE_SQL = f"""
WITH {_ACCOUNT_CTE} AS (
    UPDATE {_ACCOUNT_TABLE} SET posted = posted - %(amount)s, held = held - %(amount)s
    WHERE id = %(account_id)s
    {_returning_sql()}
), txn AS (
    INSERT INTO {_TRANSACTION_TABLE} (kind, reference, employer_id, amount, endorsement_id, created_at)
    SELECT %(kind)s, %(reference)s, account.employer_id, %(amount)s, %(endorsement_id)s, %(now)s FROM account
    RETURNING id
), entries AS (
    INSERT INTO {_ENTRY_TABLE} (transaction_id, account_id, direction, amount, balance_after, created_at)
    SELECT txn.id, account.id, %(debit)s, %(amount)s, account.posted, %(now)s FROM account, txn
    UNION ALL
    SELECT txn.id, %(payable_id)s, %(credit)s, %(amount)s, NULL, %(now)s FROM txn
), resolution AS (
    INSERT INTO {_RESOLUTION_TABLE} (hold_id, kind, transaction_id, reason, resolved_at)
    SELECT %(hold_id)s, %(captured)s, txn.id, '', %(now)s FROM txn
)
SELECT account.*, txn.id FROM account, txn
"""  # noqa: S608 — as above

_HOLD_RELEASE_SQL = f"""
WITH {_ACCOUNT_CTE} AS (
    UPDATE {_ACCOUNT_TABLE} SET held = held - %(amount)s WHERE id = %(account_id)s
    {_returning_sql()}
), resolution AS (
    INSERT INTO {_RESOLUTION_TABLE} (hold_id, kind, transaction_id, reason, resolved_at)
    SELECT %(hold_id)s, %(released)s, NULL, %(reason)s, %(now)s FROM account
    RETURNING id
)
SELECT account.*, resolution.id FROM account, resolution
"""  # noqa: S608 — as above

# `holds_capture_bulk`'s round for one account: `_HOLD_CAPTURE_SQL` for many holds, passed as arrays in capture
# order. Each employer entry's `balance_after` is the running balance (the `posted` before the round minus the
# captures so far); rows are inserted in that order, so entry ids follow the running balance.
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
"""  # noqa: S608 — as above

# Plain SQL for both backends: the hold, its employer, how it resolved (if it did) and the insurer-payable
# account. Scalar subqueries rather than joins: PostgreSQL plans this statement on every call (Django binds
# parameters client-side, so nothing is prepared) and planning a three-way join costs ~5× its execution.
_HOLD_ROW_SQL = f"""
SELECT h.id, h.account_id, h.amount, h.endorsement_id,
       (SELECT a.employer_id FROM {_ACCOUNT_TABLE} a WHERE a.id = h.account_id),
       (SELECT r.kind FROM {_RESOLUTION_TABLE} r WHERE r.hold_id = h.id),
       (SELECT p.id FROM {_ACCOUNT_TABLE} p WHERE p.kind = %s AND p.employer_id IS NULL)
FROM {_HOLD_TABLE} h
WHERE h.reference = %s
"""  # noqa: S608 — as above


def _is_postgres() -> bool:
    return connection.vendor == "postgresql"


def _write_returning(sql: str, params: dict[str, Any]) -> tuple[_AccountState, int] | None:
    """Run one of the statements above: the account's new state and the id of the row it inserted, or None
    when its UPDATE matched no row (then it wrote nothing)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    state = _account_state(row)
    if row is None or state is None:
        return None
    return state, int(row[6])


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


# --- accounts ------------------------------------------------------------------------------------------------


def ledger_account_open(*, employer_id: int) -> LedgerAccount:
    """The employer's endorsement account, created on first use.

    Race-safe: two concurrent first uses both try to INSERT inside a savepoint; the partial unique constraint
    (one endorsement account per employer) lets one win and the loser reads the winner's row.
    """
    account = LedgerAccount.objects.filter(kind=AccountKind.EMPLOYER, employer_id=employer_id).first()
    if account is not None:
        return account
    if not Employer.objects.filter(pk=employer_id).exists():
        raise UnknownEmployer(f"no employer {employer_id}")
    try:
        with transaction.atomic():
            return LedgerAccount.objects.create(kind=AccountKind.EMPLOYER, employer_id=employer_id)
    except IntegrityError:
        return LedgerAccount.objects.get(kind=AccountKind.EMPLOYER, employer_id=employer_id)


# --- postings ------------------------------------------------------------------------------------------------


def _post(
    *,
    kind: str,
    employer_id: int,
    amount: int,
    reference: str,
    endorsement_id: int | None,
    employer_direction: str,
    system_kind: str,
    actor: Actor,
) -> LedgerTransaction:
    """A top-up or refund: credit the employer, debit a system account.

    1. Replay: a transaction with this (kind, reference) already exists → return it (or `ReferenceConflict`).
    2. Resolve the employer account (created on first use) and the system account, outside the lock.
    3. In one transaction: the balance UPDATE (row lock, first), the transaction row, both entries, the audit
       row, the low-balance flag and the `ledger.funds_available` event.
    4. A concurrent twin that got past step 1 fails on the (kind, reference) unique constraint; its
       transaction rolls back and it returns the winner's transaction.
    """
    _check_amount(amount)
    _check_reference(reference)
    existing = _transaction_existing(kind, reference)
    if existing is not None:
        return _transaction_replay(existing, employer_id=employer_id, amount=amount, endorsement_id=endorsement_id)
    account_id = ledger_account_open(employer_id=employer_id).pk
    system_account_id = _system_account_id(system_kind)
    try:
        with transaction.atomic():
            state = _account_apply(account_id=account_id, posted_delta=amount)
            assert state is not None  # the account exists and nothing is required of it
            [txn] = _transactions_insert(
                [
                    LedgerTransaction(
                        kind=kind,
                        reference=reference,
                        employer_id=employer_id,
                        amount=amount,
                        endorsement_id=endorsement_id,
                    )
                ],
                state=state,
                employer_direction=employer_direction,
                system_account_id=system_account_id,
            )
            audit_record(
                actor=actor,
                action=f"ledger.{kind}_posted",
                object_type="ledger_transaction",
                object_id=txn.pk,
                employer_id=employer_id,
                after={
                    "kind": kind,
                    "reference": reference,
                    "amount": amount,
                    "endorsement_id": endorsement_id,
                    "posted": state.posted,
                    "held": state.held,
                },
            )
            if kind == TransactionKind.TOPUP:  # partner event (SPEC §10, issue 13)
                topup_posted_event_record(
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
    except IntegrityError:
        existing = _transaction_existing(kind, reference)
        if existing is None:
            raise
        return _transaction_replay(existing, employer_id=employer_id, amount=amount, endorsement_id=endorsement_id)


def topup_post(*, employer_id: int, amount: int, reference: str, actor: Actor) -> LedgerTransaction:
    """Credit the employer's account, debit top-up clearing; wakes parked endorsements (`funds_available`).

    Atomic; idempotent by `reference` (unique per kind)."""
    return _post(
        kind=TransactionKind.TOPUP,
        employer_id=employer_id,
        amount=amount,
        reference=reference,
        endorsement_id=None,
        employer_direction=Direction.CREDIT,
        system_kind=AccountKind.TOPUP_CLEARING,
        actor=actor,
    )


def refund_post(
    *, employer_id: int, amount: int, reference: str, endorsement_id: int | None = None, actor: Actor
) -> LedgerTransaction:
    """Credit the employer for a confirmed deletion or a negative correction, debit insurer payable; wakes
    parked endorsements. Atomic; idempotent by `reference`."""
    return _post(
        kind=TransactionKind.REFUND,
        employer_id=employer_id,
        amount=amount,
        reference=reference,
        endorsement_id=endorsement_id,
        employer_direction=Direction.CREDIT,
        system_kind=AccountKind.INSURER_PAYABLE,
        actor=actor,
    )


# --- holds ---------------------------------------------------------------------------------------------------


def _hold_existing(reference: str) -> Hold | None:
    return Hold.objects.filter(reference=reference).select_related("account").first()


def _hold_replay(existing: Hold, *, employer_id: int, amount: int, endorsement_id: int | None) -> HoldResult:
    if existing.account.employer_id != employer_id or existing.amount != amount:
        raise ReferenceConflict(f"hold reference {existing.reference!r} was already used with different terms")
    if endorsement_id is not None and existing.endorsement_id not in (None, endorsement_id):
        raise ReferenceConflict(f"hold reference {existing.reference!r} belongs to another endorsement")
    return HoldResult(placed=True, hold=existing, available_after=_available_now(employer_id))


class _DoesNotFit(Exception):
    """Internal: rolls back a hold attempt whose conditional UPDATE matched no row."""


def hold_place(
    *, employer_id: int, amount: int, reference: str, endorsement_id: int | None = None, actor: Actor
) -> HoldResult:
    """Hold `amount` of the employer's `available` for an endorsement in flight, if it fits.

    The hot path is one transaction of two statements, ordered so the employer's row lock is held only for
    the last statement and the COMMIT (on one hot employer that lock is what bounds throughput):

    1. INSERT the audit row (it takes no contended lock; its object id is the hold's reference).
    2. `_hold_write`: the conditional UPDATE `SET held = held + x WHERE employer_id = … AND posted - held >= x`
       decides and locks in one statement (race-safe on PostgreSQL without SELECT FOR UPDATE: a waiter
       re-checks the WHERE against the committed row; serialised on SQLite), and the hold row (unique
       reference) is inserted from its RETURNING — on PostgreSQL in the same statement. No row → roll back
       step 1: nothing written.
    3. The low-balance crossing (no query unless it crosses); COMMIT releases the row lock.
    4. Replays are found without a pre-read: a repeated reference fails on `Hold.reference`'s unique
       constraint in step 2 (the whole attempt, `held` included, rolls back) or — when the amount no longer
       fits — is looked up after step 2 refused it; either way the original hold is reported placed.
    """
    _check_amount(amount)
    _check_reference(reference)
    try:
        with transaction.atomic():
            audit_record(
                actor=actor,
                action="ledger.hold_placed",
                object_type="ledger_hold",
                object_id=reference,
                employer_id=employer_id,
                after={"reference": reference, "amount": amount, "endorsement_id": endorsement_id},
            )
            placed = _hold_write(
                employer_id=employer_id, amount=amount, reference=reference, endorsement_id=endorsement_id
            )
            if placed is None:
                raise _DoesNotFit
            state, hold = placed
            _low_balance_track(state)
            return HoldResult(placed=True, hold=hold, available_after=state.available)
    except _DoesNotFit:
        existing = _hold_existing(reference)
        if existing is None:
            return HoldResult(placed=False, hold=None, available_after=_available_now(employer_id))
        return _hold_replay(existing, employer_id=employer_id, amount=amount, endorsement_id=endorsement_id)
    except IntegrityError:
        existing = _hold_existing(reference)
        if existing is None:
            raise
        return _hold_replay(existing, employer_id=employer_id, amount=amount, endorsement_id=endorsement_id)


def _hold_write(
    *, employer_id: int, amount: int, reference: str, endorsement_id: int | None
) -> tuple[_AccountState, Hold] | None:
    """`held += amount` if it fits, and the hold row; None (nothing written) when it does not fit or the employer
    has no account. One statement (`_HOLD_PLACE_SQL`) on PostgreSQL, the same two steps through the ORM elsewhere."""
    if not _is_postgres():
        state = _account_apply(employer_id=employer_id, held_delta=amount, require_available=amount)
        if state is None:
            return None
        return state, Hold.objects.create(
            reference=reference, account_id=state.id, amount=amount, endorsement_id=endorsement_id
        )
    now = timezone.now()
    params = {
        "amount": amount,
        "employer_id": employer_id,
        "kind": AccountKind.EMPLOYER.value,
        "reference": reference,
        "endorsement_id": endorsement_id,
        "now": now,
    }
    written = _write_returning(_HOLD_PLACE_SQL, params)
    if written is None:
        return None
    state, hold_id = written
    hold = Hold(
        id=hold_id,
        reference=reference,
        account_id=state.id,
        amount=amount,
        endorsement_id=endorsement_id,
        created_at=now,
    )
    return state, _loaded(hold)


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


def _holds_place_bulk_round(*, employer_id: int, requests: Sequence[HoldRequest], actor: Actor) -> list[HoldResult]:
    # Read outside the lock: a hold never disappears, and one placed concurrently after this read makes the
    # bulk INSERT below fail on the unique reference, so the round is retried and then sees it.
    references = list(dict.fromkeys(r.reference for r in requests))
    existing: dict[str, Hold] = {}
    for start in range(0, len(references), _CHUNK):
        chunk = references[start : start + _CHUNK]
        existing.update((h.reference, h) for h in Hold.objects.filter(reference__in=chunk).select_related("account"))
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
            audit_record(
                actor=actor,
                action="ledger.holds_placed",
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
    """What resolving one hold needs, read by one plain query (`_HOLD_ROW_SQL`, no model instances): the hold,
    its employer, how it resolved (None while open) and the insurer-payable account (None before its first
    use). The resolution's own row is read only for a replay."""

    id: int
    reference: str
    account_id: int
    amount: int
    endorsement_id: int | None
    employer_id: int
    resolution_kind: str | None
    payable_id: int | None


def _hold_row(reference: str) -> _HoldRow:
    with connection.cursor() as cursor:
        cursor.execute(_HOLD_ROW_SQL, [AccountKind.INSURER_PAYABLE.value, reference])
        row = cursor.fetchone()
    if row is None:
        raise HoldNotFound(f"no hold with reference {reference!r}")
    hold_id, account_id, amount, endorsement_id, employer_id, resolution_kind, payable_id = row
    return _HoldRow(
        id=hold_id,
        reference=reference,
        account_id=account_id,
        amount=amount,
        endorsement_id=endorsement_id,
        employer_id=employer_id,
        resolution_kind=resolution_kind,
        payable_id=payable_id,
    )


def _capture_replay(hold: _HoldRow) -> LedgerTransaction | None:
    """The capture already made for this hold (replay, its transaction read only now), `HoldAlreadyReleased`,
    or None while the hold is open."""
    if hold.resolution_kind is None:
        return None
    if hold.resolution_kind == ResolutionKind.RELEASED:
        raise HoldAlreadyReleased(f"hold {hold.reference!r} was released; it cannot be captured")
    return LedgerTransaction.objects.get(hold_resolution__hold_id=hold.id)


def hold_capture(*, reference: str, actor: Actor) -> LedgerTransaction:
    """Turn a hold into a posted debit (on the insurer's confirmation): `held` and `posted` both drop by the
    hold's amount (so `available` does not move), credit insurer payable, resolve the hold as captured.

    1. Read the hold with its resolution (one plain query). Captured already → return that transaction
       (replay); released → `HoldAlreadyReleased`.
    2. In one transaction: the audit row (no contended lock), then `_capture_write` — the balance UPDATE (the
       employer row lock, the first lock taken) with the capture transaction (kind=capture, reference = the
       hold's), both entries and the `HoldResolution` row, one statement on PostgreSQL — then the low-balance
       crossing and COMMIT.
    3. A concurrent capture or release of the same hold waits on the row lock, then fails on the unique
       `HoldResolution.hold` (or `(kind, reference)`) and rolls back — including its balance change — so
       exactly one resolution wins. The loser then answers as in step 1.
    """
    hold = _hold_row(reference)
    done = _capture_replay(hold)
    if done is not None:
        return done
    payable_id = hold.payable_id if hold.payable_id is not None else _system_account_id(AccountKind.INSURER_PAYABLE)
    try:
        with transaction.atomic():
            audit_record(
                actor=actor,
                action="ledger.hold_captured",
                object_type="ledger_hold",
                object_id=hold.id,
                employer_id=hold.employer_id,
                after={"reference": hold.reference, "amount": hold.amount},
            )
            state, txn = _capture_write(hold, payable_id=payable_id)
            _low_balance_track(state)
            return txn
    except IntegrityError:
        done = _capture_replay(_hold_row(reference))
        if done is None:
            raise
        return done


def _capture_write(hold: _HoldRow, *, payable_id: int) -> tuple[_AccountState, LedgerTransaction]:
    """`posted -= amount, held -= amount` on the hold's account, the capture transaction, its two balanced
    entries (the same amount on each side; the employer's carries `balance_after`) and the resolution.
    One statement (`_HOLD_CAPTURE_SQL`) on PostgreSQL, the same steps through the ORM elsewhere."""
    if not _is_postgres():
        state = _account_apply(account_id=hold.account_id, posted_delta=-hold.amount, held_delta=-hold.amount)
        assert state is not None
        [txn] = _transactions_insert(
            [
                LedgerTransaction(
                    kind=TransactionKind.CAPTURE,
                    reference=hold.reference,
                    employer_id=state.employer_id,
                    amount=hold.amount,
                    endorsement_id=hold.endorsement_id,
                )
            ],
            state=state,
            employer_direction=Direction.DEBIT,
            system_account_id=payable_id,
        )
        HoldResolution.objects.create(hold_id=hold.id, kind=ResolutionKind.CAPTURED, transaction=txn)
        return state, txn
    now = timezone.now()
    params = {
        "amount": hold.amount,
        "account_id": hold.account_id,
        "kind": TransactionKind.CAPTURE.value,
        "reference": hold.reference,
        "endorsement_id": hold.endorsement_id,
        "debit": Direction.DEBIT.value,
        "credit": Direction.CREDIT.value,
        "payable_id": payable_id,
        "hold_id": hold.id,
        "captured": ResolutionKind.CAPTURED.value,
        "now": now,
    }
    written = _write_returning(_HOLD_CAPTURE_SQL, params)
    assert written is not None  # the hold's account exists and nothing is required of it
    state, new_id = written
    txn = LedgerTransaction(
        id=new_id,
        kind=TransactionKind.CAPTURE,
        reference=hold.reference,
        employer_id=state.employer_id,
        amount=hold.amount,
        endorsement_id=hold.endorsement_id,
        created_at=now,
    )
    return state, _loaded(txn)


def holds_capture_bulk(*, references: Sequence[str], actor: Actor) -> dict[str, LedgerTransaction]:
    """`hold_capture` for many holds at once (an insurer's confirmations of a batch): one lock round per
    employer account instead of one transaction per hold. Returns {reference: capture transaction}.

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


def _hold_rows(references: Sequence[str]) -> dict[str, _HoldRow]:
    """The holds of `references` as plain rows with how they resolved (chunked); `HoldNotFound` for any unknown."""
    found: dict[str, _HoldRow] = {}
    # Correlated subqueries, as in `_HOLD_ROW_SQL`: index lookups per hold whatever the planner's statistics
    # say (a join here can turn into a scan of every resolution).
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
                payable_id=None,
            )
    for reference in references:
        if reference not in found:
            raise HoldNotFound(f"no hold with reference {reference!r}")
    return found


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
            action="ledger.holds_captured",
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


def hold_release(*, reference: str, actor: Actor, reason: str = "") -> HoldResolution:
    """Void a hold (insurer rejection, cancel, failure): `held` drops by its amount; no money moved, so no
    ledger transaction is written — the `HoldResolution` (kind released, reason) is the record. Wakes parked
    endorsements (`ledger.funds_available`).

    1. Read the hold with its resolution (one plain query). Released already → return it (replay); captured →
       `HoldAlreadyCaptured`.
    2. In one transaction: the audit row (no contended lock), then the `held` UPDATE (employer row lock, the
       first lock taken) with the resolution row — one statement on PostgreSQL — then the low-balance flag (it
       may clear) and the funds-available event.
    3. A concurrent resolution of the same hold fails on the unique `HoldResolution.hold`, rolls back and
       answers as in step 1.
    """
    reason = reason[:200]
    hold = _hold_row(reference)
    if hold.resolution_kind is not None:
        return _release_outcome(hold)
    try:
        with transaction.atomic():
            audit_record(
                actor=actor,
                action="ledger.hold_released",
                object_type="ledger_hold",
                object_id=hold.id,
                employer_id=hold.employer_id,
                after={"reference": hold.reference, "amount": hold.amount, "reason": reason},
            )
            state, resolution = _release_write(hold, reason=reason)
            _low_balance_track(state)
            _funds_available(state)
            return resolution
    except IntegrityError:
        hold = _hold_row(reference)
        if hold.resolution_kind is None:
            raise
        return _release_outcome(hold)


def _release_write(hold: _HoldRow, *, reason: str) -> tuple[_AccountState, HoldResolution]:
    """`held -= amount` on the hold's account and the released resolution; one statement on PostgreSQL."""
    if not _is_postgres():
        state = _account_apply(account_id=hold.account_id, held_delta=-hold.amount)
        assert state is not None
        return state, HoldResolution.objects.create(hold_id=hold.id, kind=ResolutionKind.RELEASED, reason=reason)
    now = timezone.now()
    params = {
        "amount": hold.amount,
        "account_id": hold.account_id,
        "hold_id": hold.id,
        "released": ResolutionKind.RELEASED.value,
        "reason": reason,
        "now": now,
    }
    written = _write_returning(_HOLD_RELEASE_SQL, params)
    assert written is not None
    state, new_id = written
    resolution = HoldResolution(
        id=new_id, hold_id=hold.id, kind=ResolutionKind.RELEASED, transaction=None, reason=reason, resolved_at=now
    )
    return state, _loaded(resolution)


def _release_outcome(hold: _HoldRow) -> HoldResolution:
    """The release already made (replay), or `HoldAlreadyCaptured`."""
    if hold.resolution_kind == ResolutionKind.CAPTURED:
        raise HoldAlreadyCaptured(f"hold {hold.reference!r} was captured; it cannot be released")
    return HoldResolution.objects.get(hold_id=hold.id)


def holds_release_bulk(*, reasons: Mapping[str, str], actor: Actor) -> dict[str, HoldResolution]:
    """`hold_release` for many holds ({reference: reason}, e.g. an insurer's rejections of a batch): one lock
    round per employer account. Returns {reference: resolution}.

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
            action="ledger.holds_released",
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


@dataclass(frozen=True, slots=True)
class RefundRequest:
    employer_id: int
    amount: int
    reference: str
    endorsement_id: int | None = None


def refunds_post_bulk(*, requests: Sequence[RefundRequest], actor: Actor) -> dict[str, LedgerTransaction]:
    """`refund_post` for many refunds (confirmed deletions of a batch): one lock round per employer. Returns
    {reference: refund transaction}.

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
            action="ledger.refunds_posted",
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


def holds_existing(*, references: Sequence[str]) -> set[str]:
    """Which of `references` name a hold (one query per 5,000)."""
    found: set[str] = set()
    for start in range(0, len(references), _CHUNK):
        found.update(
            Hold.objects.filter(reference__in=references[start : start + _CHUNK]).values_list("reference", flat=True)
        )
    return found
