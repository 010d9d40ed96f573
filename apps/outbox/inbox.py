"""Idempotent consumers: record (consumer, message) in the same transaction as the consumer's writes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection, transaction
from django.utils import timezone

from apps.outbox import registry
from apps.outbox.contracts import Message
from apps.outbox.models import InboxEntry, OutboxMessage, OutboxStatus

_INSERT_SQL = (
    "INSERT INTO outbox_inboxentry (consumer, message_id, processed_at) VALUES (%s, %s, %s) "
    "ON CONFLICT (consumer, message_id) DO NOTHING RETURNING id"
)


def _consumer_name(message: Message, consumer: str | None) -> str:
    if consumer:
        return consumer
    spec = registry.get(message.topic)
    return spec.name if spec else message.topic


def inbox_seen(message: Message, consumer: str | None = None) -> bool:
    """Cheap pre-check for consumers that do external I/O before their transaction."""
    return InboxEntry.objects.filter(consumer=_consumer_name(message, consumer), message_id=message.id).exists()


def mark_done(message_id: int) -> None:
    OutboxMessage.objects.filter(pk=message_id).exclude(status=OutboxStatus.DONE).update(
        status=OutboxStatus.DONE, done_at=timezone.now(), leased_until=None
    )


@contextmanager
def inbox_consume(message: Message, consumer: str | None = None) -> Iterator[bool]:
    """Open a transaction, claim (consumer, message) in the inbox, and yield whether this is the first time.

    The caller does its writes inside the block only when it yields True; they, the inbox row and the outbox
    row's `done` mark commit together, so a redelivered message changes nothing. Two concurrent deliveries
    of one message serialise on the inbox's unique index: the second yields False after the first commits.
    """
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(_INSERT_SQL, [_consumer_name(message, consumer), message.id, timezone.now()])
            first = cursor.fetchone() is not None
        mark_done(message.id)
        yield first
