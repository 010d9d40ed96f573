"""Idempotent consumers: record (consumer, message) in the same transaction as the consumer's own writes.

    @consumer("ledger.topup_posted", queue="ledger")
    def handle(message: Message) -> None:
        with inbox_consume(message) as first:
            if first:
                ...  # the consumer's writes; they commit with the inbox row and the outbox row's `done`

A consumer that must call the outside world first (an insurer, a bureau) does the I/O **outside** any
transaction, after a cheap `inbox_seen(...)` pre-check, and then records the result inside `inbox_consume`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import overload

from django.db import connection, transaction
from django.utils import timezone

from apps.outbox import registry
from apps.outbox.contracts import Message
from apps.outbox.models import InboxEntry, OutboxStatus

# INSERT … ON CONFLICT DO NOTHING (PostgreSQL and SQLite ≥ 3.24): the row count says whether we were first.
_INSERT_SQL = (
    "INSERT INTO outbox_inboxentry (consumer, message_id, processed_at) VALUES (%s, %s, %s) "
    "ON CONFLICT (consumer, message_id) DO NOTHING"
)


def consumer_name(message: Message, consumer: str | None = None) -> str:
    """The inbox's name for a consumer: the given one, else the topic's registered consumer, else the topic."""
    if consumer:
        return consumer
    spec = registry.get(message.topic)
    return spec.name if spec else message.topic


@overload
def inbox_seen(consumer: str, message_id: int, /) -> bool: ...
@overload
def inbox_seen(message: Message, consumer: str | None = None, /) -> bool: ...
def inbox_seen(first: str | Message, second: int | str | None = None, /) -> bool:
    """Has this consumer already applied this message? A cheap pre-check (one index lookup) for consumers
    that do external I/O before their transaction; the authoritative check is `inbox_consume`.

    `inbox_seen("ledger.topup", 42)` or `inbox_seen(message)` (consumer name from the registry).
    """
    if isinstance(first, Message):
        name = consumer_name(first, second if isinstance(second, str) else None)
        message_id = first.id
    else:
        if not isinstance(second, int):
            raise TypeError("inbox_seen(consumer, message_id) needs an integer message id")
        name, message_id = first, second
    return InboxEntry.objects.filter(consumer=name, message_id=message_id).exists()


_MARK_DONE_SQL = (
    "UPDATE outbox_outboxmessage SET status = %s, done_at = %s, leased_until = NULL, lease_token = NULL"
    " WHERE id = %s AND status <> %s"
)


def mark_done(message_id: int) -> int:
    """The consumer's work for this row has committed (or is committing with this update): mark it `done`.

    Deliberately **not** conditional on the delivery's lease token, unlike a failure: the consumer's own
    commit (with its inbox row) is the fact, whichever delivery made it. If the lease expired and the row was
    re-published, or a stale failure made it `pending`/`dead`, the effect has still been applied exactly once
    and the row is done. A duplicate delivery then finds the inbox row and changes nothing.
    """
    # One constant statement, not a queryset built per call: every consumed message runs it (issue 15).
    with connection.cursor() as cursor:
        cursor.execute(_MARK_DONE_SQL, [OutboxStatus.DONE.value, timezone.now(), message_id, OutboxStatus.DONE.value])
        return int(cursor.rowcount)


@contextmanager
def inbox_consume(message: Message, consumer: str | None = None) -> Iterator[bool]:
    """Open a transaction, claim (consumer, message) in the inbox, and yield whether this is the first time.

    1. `transaction.atomic()` (a savepoint if the caller already opened one).
    2. `INSERT … ON CONFLICT DO NOTHING` into the inbox. A concurrent delivery of the same message blocks on
       the unique index until the first commits (then gets a conflict: False) or rolls back (then inserts:
       True) — two deliveries can never both see True.
    3. Yield; the caller does its writes only when it got True.
    4. On a clean exit mark the outbox row `done` (last, so its row lock is held only for the commit), and
       commit everything together. An exception rolls back the inbox row, the writes and the mark, so the
       delivery fails and is retried as a whole.
    """
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_INSERT_SQL, [consumer_name(message, consumer), message.id, timezone.now()])
            first = cursor.rowcount == 1
        yield first
        mark_done(message.id)
        if (done := _marked_done.get()) is not None:
            transaction.on_commit(functools.partial(done.add, message.id))


_marked_done: ContextVar[set[int] | None] = ContextVar("outbox_marked_done", default=None)


@contextmanager
def rows_marked_done() -> Iterator[set[int]]:
    """The outbox rows an `inbox_consume` in this context marked done **and committed** (a delivery then need not
    mark its row again: `delivery.deliver_envelope`)."""
    done: set[int] = set()
    token = _marked_done.set(done)
    try:
        yield done
    finally:
        _marked_done.reset(token)
