"""Writing to the outbox, and operators' requeue/purge of dead rows."""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from apps.common.logging import current_correlation_id
from apps.outbox.models import OutboxMessage, OutboxStatus

log = logging.getLogger(__name__)


class OutboxError(RuntimeError):
    pass


class RetryLater(Exception):
    """Raised by a consumer to be retried: after `delay_seconds` if given (e.g. an insurer's Retry-After),
    else after the outbox's own backoff. It counts as a failed attempt."""

    def __init__(self, reason: str, *, delay_seconds: float | None = None) -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds


def outbox_enqueue(
    *, topic: str, payload: dict[str, Any], key: str | None = None, delay_seconds: float = 0
) -> OutboxMessage:
    """Write an event in the caller's transaction; it is published only if that transaction commits.

    Raises `OutboxError` outside a transaction (an event written in autocommit could be published for a change
    that then fails). Payloads must be JSON (never pickles).
    """
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        raise OutboxError("outbox_enqueue must be called inside a transaction (transaction.atomic)")
    try:
        payload = json.loads(json.dumps(payload, cls=DjangoJSONEncoder))
    except (TypeError, ValueError) as exc:
        raise OutboxError(f"payload for {topic!r} is not JSON-serialisable: {exc}") from exc
    now = timezone.now()
    headers = {"correlation_id": current_correlation_id()} if current_correlation_id() else {}
    message = OutboxMessage.objects.create(
        topic=topic,
        key=key,
        payload=payload,
        headers=headers,
        created_at=now,
        available_at=now + timedelta(seconds=delay_seconds) if delay_seconds else now,
    )
    if settings.OUTBOX["NUDGE_ON_COMMIT"] and not getattr(connection, "_keel_outbox_nudge", False):
        # One nudge per transaction, however many rows it writes.
        connection._keel_outbox_nudge = True  # type: ignore[attr-defined]
        transaction.on_commit(_nudge)
        transaction.on_commit(_reset_nudge_flag)
    return message


def _reset_nudge_flag() -> None:
    transaction.get_connection()._keel_outbox_nudge = False  # type: ignore[attr-defined]


NUDGE_FLAG = "outbox:relay-queued"


def _nudge() -> None:
    """Ask a relay to run now (low latency); the beat safety net covers a lost nudge.

    Nudges collapse: only the commit that sets the "relay queued" flag sends a relay task; the relay clears
    the flag before it claims, so rows committed after that get a fresh nudge. The flag expires by itself
    (a lost relay task cannot silence nudges for long; beat runs every second anyway).
    """
    from apps.outbox.tasks import relay

    try:
        if not cache.add(NUDGE_FLAG, 1, timeout=2):
            return
        relay.apply_async(queue="outbox", retry=False, argsrepr="()", kwargsrepr="{}")
    except Exception:  # the broker or cache is down: the beat safety net (and our own retries) will catch up
        log.warning("outbox.nudge_failed", exc_info=True)


def clear_nudge_flag() -> None:
    try:
        cache.delete(NUDGE_FLAG)
    except Exception:
        log.warning("outbox.nudge_flag_unavailable", exc_info=True)


def outbox_requeue(*, ids: list[int] | None = None, topic: str | None = None) -> int:
    """Dead rows → pending with a fresh attempt budget. Returns how many were requeued."""
    qs = OutboxMessage.objects.filter(status=OutboxStatus.DEAD)
    if ids:
        qs = qs.filter(pk__in=ids)
    if topic:
        qs = qs.filter(topic=topic)
    with transaction.atomic():
        count = qs.update(
            status=OutboxStatus.PENDING, attempts=0, available_at=timezone.now(), leased_until=None, lease_token=None
        )
        if count and settings.OUTBOX["NUDGE_ON_COMMIT"]:
            transaction.on_commit(_nudge)
    return count


def outbox_purge_dead(*, ids: list[int]) -> int:
    """Delete dead rows an operator has given up on (this also unblocks later events of their keys)."""
    deleted, _ = OutboxMessage.objects.filter(pk__in=ids, status=OutboxStatus.DEAD).delete()
    return deleted


def outbox_retention(*, batch_size: int | None = None, max_batches: int = 100) -> int:
    """Delete consumed rows (and inbox entries) older than the retention window, in bounded batches."""
    from apps.outbox.models import InboxEntry

    batch_size = batch_size or settings.OUTBOX["RETENTION_BATCH"]
    cutoff = timezone.now() - timedelta(hours=settings.OUTBOX["RETENTION_HOURS"])
    total = 0
    for _ in range(max_batches):
        ids = list(
            OutboxMessage.objects.filter(status=OutboxStatus.DONE, done_at__lt=cutoff)
            .order_by("done_at")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            break
        total += OutboxMessage.objects.filter(pk__in=ids, status=OutboxStatus.DONE).delete()[0]
    for _ in range(max_batches):
        inbox_ids = list(InboxEntry.objects.filter(processed_at__lt=cutoff).values_list("pk", flat=True)[:batch_size])
        if not inbox_ids:
            break
        InboxEntry.objects.filter(pk__in=inbox_ids).delete()
    return total
