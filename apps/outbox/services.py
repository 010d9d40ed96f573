"""Writing to the outbox, and operators' requeue/purge of dead rows."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import timedelta
from typing import Any

from celery import current_app
from django.conf import settings
from django.core.cache import cache
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.utils import timezone

from apps.common.bulk import insert_one
from apps.common.logging import WarnAtMostEvery, current_correlation_id
from apps.outbox.models import InboxEntry, OutboxMessage, OutboxStatus

log = logging.getLogger(__name__)


class OutboxError(RuntimeError):
    pass


class RetryLater(Exception):
    """Raised by a consumer to be retried: after `delay_seconds` if given (e.g. an insurer's Retry-After),
    else after the outbox's own backoff. It counts as a failed attempt; the row is dead after
    OUTBOX["MAX_ATTEMPTS"], or after `max_attempts` for a consumer that keeps its own (larger) budget and
    gives up by itself before that (the insurer dispatch, ADR 0025)."""

    def __init__(
        self,
        reason: str,
        *,
        delay_seconds: float | None = None,
        min_delay_seconds: float | None = None,
        max_attempts: int | None = None,
    ) -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds
        # With no exact delay: the outbox's backoff, but never less than this (e.g. a Retry-After hint).
        self.min_delay_seconds = min_delay_seconds
        self.max_attempts = max_attempts


class Defer(Exception):
    """Raised by a consumer that did not try: put the row back for `delay_seconds` **without** counting an
    attempt (our own circuit breaker is open, our outbound rate limit is spent — nothing reached the other
    side, so nothing of the retry budget is spent; ADR 0025)."""

    def __init__(self, reason: str, *, delay_seconds: float) -> None:
        super().__init__(reason)
        self.delay_seconds = delay_seconds


def outbox_enqueue(
    *, topic: str, payload: dict[str, Any], key: str | None = None, delay_seconds: float = 0
) -> OutboxMessage:
    """Write an event in the caller's transaction; it is published only if that transaction commits.

    Raises `OutboxError` outside a transaction (an event written in autocommit could be published for a change
    that then fails) and for a payload that is not JSON (never pickles; dates, decimals and UUIDs are
    serialised by `DjangoJSONEncoder`). Events sharing a `key` take effect in id order (ADR 0002). The
    request's correlation id travels in the headers into the consumer's logs.
    """
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        raise OutboxError("outbox_enqueue must be called inside a transaction (transaction.atomic)")
    try:
        payload = json.loads(json.dumps(payload, cls=DjangoJSONEncoder))
    except (TypeError, ValueError) as exc:
        raise OutboxError(f"payload for {topic!r} is not JSON-serialisable: {exc}") from exc
    if not isinstance(payload, dict):
        raise OutboxError(f"payload for {topic!r} must be a JSON object")
    now = timezone.now()
    message = OutboxMessage(
        topic=topic,
        key=key,
        payload=payload,
        headers={"correlation_id": current_correlation_id()},
        created_at=now,
        available_at=now + timedelta(seconds=delay_seconds) if delay_seconds > 0 else now,
    )
    insert_one(message)  # the ORM's INSERT without its per-call compilation (hot path, issue 15)
    if (written := _written.get()) is not None:
        written.append((message.id, topic))
    if settings.OUTBOX["NUDGE_ON_COMMIT"] and not _nudge_registered(connection):
        transaction.on_commit(_nudge)
    return message


_written: ContextVar[list[tuple[int, str]] | None] = ContextVar("outbox_written", default=None)


@contextmanager
def rows_written() -> Iterator[list[tuple[int, str]]]:
    """Collect `(row id, topic)` of every row `outbox_enqueue` writes in this context (a consumer's run, so the
    worker can carry on with the next step itself: `delivery.deliver_envelope`, ADR 0070). Rows of a transaction
    that rolled back are listed too; claiming them matches nothing."""
    written: list[tuple[int, str]] = []
    token = _written.set(written)
    try:
        yield written
    finally:
        _written.reset(token)


def _nudge_registered(connection: BaseDatabaseWrapper) -> bool:
    """One nudge per transaction, however many rows it writes. Django keeps the pending on-commit callbacks
    on the connection and drops those of a rolled-back savepoint, so this stays right across savepoints
    and rollbacks (a flag of our own would not be reset by a rollback)."""
    return any(entry[1] is _nudge for entry in connection.run_on_commit)


NUDGE_FLAG = "outbox:relay-queued"
# While Redis or the broker is down every commit's nudge fails: one warning a minute, not a traceback per commit.
_warn_nudge_failed = WarnAtMostEvery(log, "outbox.nudge_failed")
_warn_flag_unavailable = WarnAtMostEvery(log, "outbox.nudge_flag_unavailable")


def _nudge() -> None:
    """Ask a relay to run now (low latency); the beat safety net covers a lost nudge.

    Nudges collapse: only the commit that sets the "relay queued" flag sends a relay task; the relay clears
    the flag before it claims, so rows committed after that get a fresh nudge. The flag expires by itself
    (a lost relay task cannot silence nudges for long; beat runs every second anyway).
    """
    try:
        if not cache.add(NUDGE_FLAG, 1, timeout=2):
            return
        # By name: the services never import the task module (tasks import services, not the reverse).
        current_app.send_task("outbox.relay", queue="outbox", retry=False, argsrepr="()", kwargsrepr="{}")
    except Exception:  # the broker or cache is down: the beat safety net (and our own retries) will catch up
        _warn_nudge_failed(exc_info=True)


def clear_nudge_flag() -> None:
    try:
        cache.delete(NUDGE_FLAG)
    except Exception:
        _warn_flag_unavailable(exc_info=True)


def outbox_requeue(*, ids: Sequence[int] | None = None, topic: str | None = None, all_dead: bool = False) -> int:
    """Dead rows → `pending`, attempts 0, available now (a fresh attempt budget). Returns how many.

    Say which rows: `ids`, `topic` (both narrow), or `all_dead=True`. An empty `ids` requeues nothing — an
    admin selection with no dead rows in it must not requeue every dead row.
    """
    if ids is None and topic is None and not all_dead:
        raise OutboxError("outbox_requeue needs ids, a topic or all_dead=True")
    qs = OutboxMessage.objects.filter(status=OutboxStatus.DEAD)
    if ids is not None:
        qs = qs.filter(pk__in=list(ids))
    if topic is not None:
        qs = qs.filter(topic=topic)
    with transaction.atomic():
        count = qs.update(
            status=OutboxStatus.PENDING,
            attempts=0,
            available_at=timezone.now(),
            leased_until=None,
            lease_token=None,
        )
        if count and settings.OUTBOX["NUDGE_ON_COMMIT"]:
            transaction.on_commit(_nudge)
    return count


def outbox_purge_dead(*, ids: Sequence[int]) -> int:
    """Delete dead rows an operator has given up on (this also unblocks later events of their keys)."""
    deleted, _ = OutboxMessage.objects.filter(pk__in=list(ids), status=OutboxStatus.DEAD).delete()
    return deleted


def outbox_retention(*, batch_size: int | None = None, max_batches: int = 100) -> int:
    """Delete `done` rows and inbox entries older than OUTBOX["RETENTION_HOURS"], in bounded batches.

    1. Up to `max_batches` rounds of: select the oldest `batch_size` done ids (partial index on done_at),
       delete them (re-checking `status='done'`). Each round is its own short statement, so retention never
       holds many locks or one long transaction. `pending`, `inflight` and `dead` rows are never deleted.
    2. The same for inbox entries. Forgetting an inbox entry is safe once its message is gone: a very late
       duplicate delivery finds no outbox row (or a done one) and is dropped before its consumer runs.

    Returns how many outbox rows were deleted.
    """
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
