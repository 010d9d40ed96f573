"""The relay: claim due outbox rows in short transactions, publish them after commit (SPEC §3).

Claiming (PostgreSQL) is one statement:

1. expired leases (a relay or consumer died) go back to `pending`;
2. `UPDATE … SET status='inflight', leased_until, lease_token FROM (SELECT id … WHERE status='pending' AND
   available_at <= now AND no earlier unfinished row shares its key ORDER BY id LIMIT n FOR UPDATE SKIP
   LOCKED)` — several relays never claim the same row, and never wait on each other;
3. commit, then publish each row as an `outbox.deliver` Celery task on its topic's queue. No network I/O
   happens while a row lock is held. A publish failure (broker down) returns the row to `pending` without
   counting an attempt and stops the batch.

On SQLite (one writer at a time) the same steps run through the ORM.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from apps.outbox import metrics, registry
from apps.outbox.contracts import Message
from apps.outbox.models import UNFINISHED, OutboxMessage, OutboxStatus

log = logging.getLogger(__name__)
Publisher = Callable[[Sequence[tuple[Message, str]]], int]

_CLAIM_SQL = """
WITH due AS (
    SELECT o.id FROM outbox_outboxmessage o
    WHERE o.status = 'pending' AND o.available_at <= %(now)s
      AND (o.key IS NULL OR NOT EXISTS (
            SELECT 1 FROM outbox_outboxmessage e
            WHERE e.key = o.key AND e.id < o.id AND e.status IN ('pending', 'inflight', 'dead')))
    ORDER BY o.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox_outboxmessage m
SET status = 'inflight', leased_until = %(lease)s, lease_token = %(token)s, published_at = %(now)s
FROM due WHERE m.id = due.id
RETURNING m.id, m.topic, m.key, m.payload, m.headers, m.attempts, m.created_at
"""

_RECLAIM_SQL = """
UPDATE outbox_outboxmessage SET status = 'pending', leased_until = NULL, lease_token = NULL
WHERE status = 'inflight' AND leased_until < %(now)s
"""


def _reclaim_expired(now: Any) -> int:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_RECLAIM_SQL, {"now": now})
            return int(cursor.rowcount)
    return OutboxMessage.objects.filter(status=OutboxStatus.INFLIGHT, leased_until__lt=now).update(
        status=OutboxStatus.PENDING, leased_until=None, lease_token=None
    )


def claim(*, batch_size: int) -> list[Message]:
    """Steps 1–2 in one short transaction; returns the claimed rows in id order."""
    now = timezone.now()
    token = uuid.uuid4()
    lease = now + timedelta(seconds=settings.OUTBOX["LEASE_SECONDS"])
    with transaction.atomic():
        _reclaim_expired(now)
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute(_CLAIM_SQL, {"now": now, "limit": batch_size, "lease": lease, "token": token})
                rows = cursor.fetchall()
            import json

            claimed = [
                Message(
                    id=r[0],
                    topic=r[1],
                    key=r[2],
                    payload=r[3] if isinstance(r[3], dict) else json.loads(r[3]),
                    headers=r[4] if isinstance(r[4], dict) else json.loads(r[4] or "{}"),
                    attempt=r[5],
                    created_at=r[6],
                    lease_token=str(token),
                )
                for r in rows
            ]
        else:
            earlier_open = OutboxMessage.objects.filter(
                key=OuterRef("key"), id__lt=OuterRef("id"), status__in=UNFINISHED
            )
            ids = list(
                OutboxMessage.objects.filter(status=OutboxStatus.PENDING, available_at__lte=now)
                .exclude(key__isnull=False, pk__in=OutboxMessage.objects.filter(Exists(earlier_open)).values("pk"))
                .order_by("id")
                .values_list("id", flat=True)[:batch_size]
            )
            OutboxMessage.objects.filter(pk__in=ids, status=OutboxStatus.PENDING).update(
                status=OutboxStatus.INFLIGHT, leased_until=lease, lease_token=token, published_at=now
            )
            claimed = [
                Message(
                    id=m.id,
                    topic=m.topic,
                    key=m.key,
                    payload=m.payload,
                    headers=m.headers,
                    attempt=m.attempts,
                    created_at=m.created_at,
                    lease_token=str(token),
                )
                for m in OutboxMessage.objects.filter(pk__in=ids, lease_token=token).order_by("id")
            ]
    claimed.sort(key=lambda m: m.id)
    return claimed


def release_unpublished(messages: Sequence[Message], *, delay_seconds: float = 1.0) -> None:
    """Publish failed (broker down): back to pending, no attempt counted."""
    if not messages:
        return
    OutboxMessage.objects.filter(
        pk__in=[m.id for m in messages], status=OutboxStatus.INFLIGHT, lease_token__in={m.lease_token for m in messages}
    ).update(
        status=OutboxStatus.PENDING,
        leased_until=None,
        lease_token=None,
        available_at=timezone.now() + timedelta(seconds=delay_seconds),
    )


def celery_publisher(batch: Sequence[tuple[Message, str]]) -> int:
    """Publish the batch to the topics' queues over one pooled broker connection.

    A lone message for a queue goes as its own `outbox.deliver` task (the low-latency path); a backlog goes
    as `outbox.deliver_many` tasks of up to OUTBOX["PUBLISH_CHUNK"] rows each (the throughput path: one
    broker message per chunk instead of per row). Rows keep id order within a queue. Returns how many rows
    were published before an error (the caller releases the rest).
    """
    from apps.outbox.tasks import deliver, deliver_many

    chunk_size = max(1, int(settings.OUTBOX.get("PUBLISH_CHUNK", 50)))
    by_queue: dict[str, list[Message]] = {}
    for message, queue in batch:
        by_queue.setdefault(queue, []).append(message)
    published = 0
    try:
        with deliver.app.producer_or_acquire() as producer:
            for queue, messages in by_queue.items():
                for start in range(0, len(messages), chunk_size):
                    chunk = messages[start : start + chunk_size]
                    task = deliver if len(chunk) == 1 else deliver_many
                    args = (chunk[0].to_envelope(),) if len(chunk) == 1 else ([m.to_envelope() for m in chunk],)
                    task.apply_async(
                        args=args,
                        queue=queue,
                        routing_key=queue,
                        producer=producer,
                        retry=False,
                        argsrepr=f"<{len(chunk)} outbox row(s) from #{chunk[0].id}>",
                        kwargsrepr="{}",
                    )
                    published += len(chunk)
    except Exception:
        log.warning("outbox.publish_failed", exc_info=True, extra={"published": published})
    return published


def relay_once(*, batch_size: int | None = None, publish: Publisher | None = None) -> int:
    """Claim one batch and publish it. Returns how many messages were published."""
    publish = publish or celery_publisher
    claimed = claim(batch_size=batch_size or settings.OUTBOX["BATCH_SIZE"])
    if not claimed:
        return 0
    batch: list[tuple[Message, str]] = []
    for message in claimed:
        spec = registry.get(message.topic)
        batch.append((message, spec.queue if spec else "default"))
    published = 0
    try:
        published = publish(batch)
    except Exception:
        log.warning("outbox.publish_failed", exc_info=True)
    if published < len(batch):
        release_unpublished([m for m, _ in batch[published:]])
    now = timezone.now()
    for message, _ in batch[:published]:
        if message.created_at is not None:
            metrics.COMMIT_TO_PUBLISH.observe(max(0.0, (now - message.created_at).total_seconds()))
    return published


def relay_until_empty(
    *, batch_size: int | None = None, publish: Publisher | None = None, max_seconds: float = 5.0
) -> int:
    """Relay batches until nothing is due (or the time budget is spent)."""
    deadline = time.monotonic() + max_seconds
    total = 0
    batch_size = batch_size or settings.OUTBOX["BATCH_SIZE"]
    while time.monotonic() < deadline:
        published = relay_once(batch_size=batch_size, publish=publish)
        total += published
        if published < batch_size:
            break
    return total
