"""Claiming outbox rows: the relay's steps 1–2 (`relay.py`), and the same claim of given rows for a worker that
carries on with the rows its consumer just wrote (`delivery.py`, ADR 0070). One short transaction; `FOR UPDATE
SKIP LOCKED`, so claimers never wait on each other and never claim the same row."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, OuterRef
from django.utils import timezone

from apps.outbox.contracts import Message
from apps.outbox.models import UNFINISHED, OutboxMessage, OutboxStatus

_RECLAIM_SQL = """
UPDATE outbox_outboxmessage SET status = 'pending', leased_until = NULL, lease_token = NULL
WHERE id IN (
    SELECT id FROM outbox_outboxmessage
    WHERE status = 'inflight' AND leased_until < %(now)s
    ORDER BY id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
"""

# The NOT EXISTS is served by the partial index outbox_key_open_idx (key, id) WHERE status is unfinished; the
# outer scan by outbox_pending_idx (id) WHERE status = 'pending'.
_CLAIM_SQL = """
WITH due AS (
    SELECT o.id FROM outbox_outboxmessage o
    WHERE o.status = 'pending' AND o.available_at <= %(now)s
      AND (o.key IS NULL OR NOT EXISTS (
            SELECT 1 FROM outbox_outboxmessage e
            WHERE e.key = o.key AND e.id < o.id AND e.status IN ('pending', 'inflight', 'dead')))
      {only}
    ORDER BY o.id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE outbox_outboxmessage m
SET status = 'inflight', leased_until = %(lease)s, lease_token = %(token)s, published_at = %(now)s
FROM due WHERE m.id = due.id
RETURNING m.id, m.topic, m.key, m.payload, m.headers, m.attempts, m.created_at
"""


def _json(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    return dict(json.loads(value)) if value else {}


def _reclaim_expired(*, now: datetime, limit: int) -> int:
    """Step 1. Expired leases back to `pending` (attempts unchanged: nobody reported a failure)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_RECLAIM_SQL, {"now": now, "limit": limit})
            return int(cursor.rowcount)
    return OutboxMessage.objects.filter(status=OutboxStatus.INFLIGHT, leased_until__lt=now).update(
        status=OutboxStatus.PENDING, leased_until=None, lease_token=None
    )


def commit_without_waiting_for_disk() -> None:
    """`SET LOCAL synchronous_commit = off` for the current, outermost transaction (PostgreSQL).

    Losing a claim in a database crash is harmless: the row is simply relayed and delivered again, and the
    inbox absorbs the duplicate. Any later synchronous commit (a consumer's) flushes the WAL up to and
    including this one. Not waiting for the flush saves the relay one disk round trip per batch — per event
    when a dedicated relay is woken by every commit. Never used for writers' or consumers' transactions.
    """
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit = off")


def claim(*, batch_size: int, ids: Sequence[int] | None = None) -> list[Message]:
    """Steps 1–2 in one short transaction; returns the claimed rows in id order, each with the batch's lease
    token (the consumer's failure update is conditional on it). With `ids`, only those rows, and only those of
    them that a relay would claim now (pending, due, first unfinished of their key) — a worker carrying on with
    the rows its consumer just wrote (`delivery.deliver_envelope`, ADR 0070); no expired lease is reclaimed."""
    if ids is not None and not ids:
        return []
    now = timezone.now()
    token = uuid.uuid4()
    lease = now + timedelta(seconds=settings.OUTBOX["LEASE_SECONDS"])
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            commit_without_waiting_for_disk()
        if ids is None:
            _reclaim_expired(now=now, limit=batch_size)
        if connection.vendor == "postgresql":
            only = "" if ids is None else "AND o.id = ANY(%(ids)s)"
            with connection.cursor() as cursor:
                cursor.execute(
                    _CLAIM_SQL.format(only=only),
                    {"now": now, "limit": batch_size, "lease": lease, "token": token, "ids": list(ids or [])},
                )
                rows = cursor.fetchall()
            claimed = [
                Message.from_row(
                    OutboxMessage(
                        id=r[0], topic=r[1], key=r[2], payload=_json(r[3]), headers=_json(r[4]), attempts=r[5],
                        created_at=r[6],
                    ),
                    lease_token=str(token),
                )
                for r in rows
            ]  # fmt: skip
        else:
            earlier_open = OutboxMessage.objects.filter(
                key=OuterRef("key"), id__lt=OuterRef("id"), status__in=UNFINISHED
            )
            due = OutboxMessage.objects.filter(status=OutboxStatus.PENDING, available_at__lte=now)
            if ids is not None:
                due = due.filter(pk__in=ids)
            chosen = list(
                due.exclude(key__isnull=False, pk__in=OutboxMessage.objects.filter(Exists(earlier_open)).values("pk"))
                .order_by("id")
                .values_list("id", flat=True)[:batch_size]
            )
            OutboxMessage.objects.filter(pk__in=chosen, status=OutboxStatus.PENDING).update(
                status=OutboxStatus.INFLIGHT, leased_until=lease, lease_token=token, published_at=now
            )
            claimed = [
                Message.from_row(m, lease_token=str(token))
                for m in OutboxMessage.objects.filter(pk__in=chosen, lease_token=token)
            ]
    claimed.sort(key=lambda m: m.id)
    return claimed
