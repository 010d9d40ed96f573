"""The relay: claim due outbox rows in one short transaction, publish them after commit (SPEC §3, ADR 0002).

`relay_once` runs these steps:

1. **Reclaim** (same transaction as 2): rows `inflight` whose lease has expired — their relay died after
   claiming, or their consumer never finished — go back to `pending`. `FOR UPDATE SKIP LOCKED`: a row a
   consumer transaction is finishing right now is skipped, never waited on.
2. **Claim** (PostgreSQL: one statement): `UPDATE … SET status='inflight', leased_until=now+lease,
   lease_token=<new uuid> FROM (SELECT id … WHERE status='pending' AND available_at <= now AND no earlier row
   of the same key is unfinished ORDER BY id LIMIT n FOR UPDATE SKIP LOCKED) RETURNING …`. Several relays
   never claim the same row and never wait on each other. Commit.
3. **Publish** after the commit — no network I/O while a row lock is held — each row as a Celery task on its
   topic's queue, over one broker connection for the whole batch.
4. A publish failure (broker down) puts the unpublished rows back to `pending` a second later **without**
   counting an attempt (the broker being down is not the message's fault) and stops the batch.

The row stays `inflight` until its consumer commits (`done`) or fails (`pending` with backoff, or `dead`).
On SQLite (one writer at a time, `BEGIN IMMEDIATE`) the same steps run through the ORM.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import timedelta

from django.conf import settings
from django.db import connection
from django.utils import timezone

from apps.outbox import metrics, registry
from apps.outbox.claims import claim
from apps.outbox.contracts import Message
from apps.outbox.models import OutboxMessage, OutboxStatus

log = logging.getLogger(__name__)

# What tests and tools pass as `publish`: hand one message to a queue; raise if it could not be handed over.
Publish = Callable[[Message, str], None]

# Seconds a row whose publication failed waits before a relay tries it again.
PUBLISH_RETRY_SECONDS = 1.0


def release_unpublished(messages: Sequence[Message], *, delay_seconds: float = PUBLISH_RETRY_SECONDS) -> int:
    """Step 4. Publication failed: back to `pending` shortly, no attempt counted.

    Conditional on the claim's lease token, so a row that meanwhile changed hands (or was consumed — a
    publish may fail *after* the broker took the message) is left alone. Returns how many rows were released.
    """
    if not messages:
        return 0
    return OutboxMessage.objects.filter(
        pk__in=[m.id for m in messages],
        status=OutboxStatus.INFLIGHT,
        lease_token__in={m.lease_token for m in messages if m.lease_token},
    ).update(
        status=OutboxStatus.PENDING,
        leased_until=None,
        lease_token=None,
        published_at=None,
        available_at=timezone.now() + timedelta(seconds=delay_seconds),
    )


def celery_publish_batch(batch: Sequence[tuple[Message, str]]) -> list[Message]:
    """Step 3 with the real broker: publish the batch over one pooled producer (one connection).

    A lone row for a queue goes as its own `outbox.deliver` task (the low-latency path); a backlog goes as
    `outbox.deliver_many` tasks of up to OUTBOX["PUBLISH_CHUNK"] rows each (the throughput path: one broker
    message per chunk instead of per row; each row is still delivered, and succeeds or fails, on its own).
    Rows keep id order within a queue. Returns the messages handed over before an error.
    """
    from celery import current_app

    chunk_size = max(1, int(settings.OUTBOX.get("PUBLISH_CHUNK", 50)))
    by_queue: dict[str, list[Message]] = {}
    for message, queue in batch:
        by_queue.setdefault(queue, []).append(message)
    published: list[Message] = []
    try:
        with current_app.producer_or_acquire() as producer:
            for queue, messages in by_queue.items():
                for start in range(0, len(messages), chunk_size):
                    chunk = messages[start : start + chunk_size]
                    # By name, so the relay never imports the task module (tasks import the relay).
                    task = "outbox.deliver" if len(chunk) == 1 else "outbox.deliver_many"
                    args = (chunk[0].to_envelope(),) if len(chunk) == 1 else ([m.to_envelope() for m in chunk],)
                    current_app.send_task(
                        task,
                        args=args,
                        queue=queue,
                        routing_key=queue,
                        producer=producer,
                        retry=False,
                        # Skip Celery's repr() of the payloads (PII stays out of the broker's task metadata).
                        argsrepr=f"<{len(chunk)} outbox row(s) from #{chunk[0].id}>",
                        kwargsrepr="{}",
                    )
                    published.extend(chunk)
    except Exception:
        log.warning("outbox.publish_failed", exc_info=True, extra={"published": len(published)})
    return published


def _publish_each(batch: Sequence[tuple[Message, str]], publish: Publish) -> list[Message]:
    published: list[Message] = []
    for message, queue in batch:
        try:
            publish(message, queue)
        except Exception:
            log.warning("outbox.publish_failed", exc_info=True, extra={"published": len(published)})
            break
        published.append(message)
    return published


def relay_once(*, batch_size: int | None = None, publish: Publish | None = None) -> int:
    """Claim one batch, publish it after commit, release what could not be published (steps 1–4).

    `publish(message, queue)` replaces the Celery publisher (tests, tools); an exception from it stops the
    batch like a broker failure. Returns how many messages were published.
    """
    claimed = claim(batch_size=batch_size or settings.OUTBOX["BATCH_SIZE"])
    if not claimed:
        return 0
    batch: list[tuple[Message, str]] = []
    for message in claimed:
        spec = registry.get(message.topic)
        # A topic nobody consumes still goes out (to "default"): the delivery fails loudly, retries and ends
        # dead with "no consumer is registered" — visible to operators instead of silently stuck.
        batch.append((message, spec.queue if spec else settings.CELERY_TASK_DEFAULT_QUEUE))
    published = celery_publish_batch(batch) if publish is None else _publish_each(batch, publish)
    if len(published) < len(batch):
        done = {m.id for m in published}
        release_unpublished([m for m, _ in batch if m.id not in done])
    now = timezone.now()
    for message in published:
        metrics.COMMIT_TO_PUBLISH.observe(max(0.0, (now - message.created_at).total_seconds()))
    return len(published)


def relay_until_empty(
    *, batch_size: int | None = None, publish: Publish | None = None, max_seconds: float = 5.0
) -> int:
    """Relay batches until nothing is due, a publish fails, or the time budget is spent."""
    deadline = time.monotonic() + max_seconds
    total = 0
    batch_size = batch_size or settings.OUTBOX["BATCH_SIZE"]
    while time.monotonic() < deadline:
        published = relay_once(batch_size=batch_size, publish=publish)
        total += published
        if published < batch_size:
            break
    return total


NOTIFY_CHANNEL = "keel_outbox"


class CommitListener:
    """Wakes a relay loop when a transaction that wrote outbox rows commits (PostgreSQL LISTEN/NOTIFY).

    The `outbox_notify_commit` trigger (migration 0002) queues `NOTIFY keel_outbox` in every transaction
    that inserts outbox rows; PostgreSQL delivers it at commit, once per transaction. The listener holds its
    own autocommit connection (not one of Django's), used for nothing else.
    """

    def __init__(self) -> None:
        import psycopg

        params = connection.get_connection_params()
        params.pop("cursor_factory", None)
        params.pop("context", None)
        params.pop("pool", None)
        self._connection = psycopg.connect(autocommit=True, **params)
        self._connection.execute(f"LISTEN {NOTIFY_CHANNEL}")

    def wait(self, timeout: float) -> bool:
        """Block until a commit notification arrives (True) or `timeout` passes (False); drains the backlog."""
        woke = False
        for _ in self._connection.notifies(timeout=timeout, stop_after=1):
            woke = True
        if woke:
            for _ in self._connection.notifies(timeout=0.0001):
                pass
        return woke

    def close(self) -> None:
        self._connection.close()


def relay_forever(
    *,
    batch_size: int | None = None,
    idle_seconds: float = 1.0,
    should_stop: Callable[[], bool] = lambda: False,
    publish: Publish | None = None,
    linger_seconds: float = 0.0,
) -> int:
    """A dedicated relay process (`manage.py outbox_relay`): lowest commit → publish latency.

    1. LISTEN for commit notifications (PostgreSQL; elsewhere poll every `idle_seconds`). Listening starts
       before the first pass, so a commit during a pass is never missed: its notification waits in the
       connection's queue and ends the next wait at once.
    2. Relay until nothing is due.
    3. Wait for a notification, at most `idle_seconds` (rows that became due by time — retries, delays,
       expired leases — are picked up by this timeout). After a notification, linger `linger_seconds` so
       commits arriving close together leave as one chunk (one Celery task) instead of one task each — the
       consumers' per-task overhead, not the relay, limits throughput at a steady trickle. Go to 2.
    A database error (restart, failover) drops the listener; the loop reconnects after a pause.
    Returns how many messages it published (when `should_stop()` ends it).
    """
    total = 0
    listener: CommitListener | None = None
    while not should_stop():
        try:
            if listener is None and connection.vendor == "postgresql":
                listener = CommitListener()
            total += relay_until_empty(batch_size=batch_size, publish=publish, max_seconds=5.0)
            if listener is not None:
                if listener.wait(idle_seconds) and linger_seconds > 0:
                    time.sleep(linger_seconds)
            else:
                time.sleep(idle_seconds)
        except Exception:
            log.warning("outbox.relay_loop_error", exc_info=True)
            if listener is not None:
                try:
                    listener.close()
                except Exception:
                    log.debug("outbox.listener_close_failed", exc_info=True)
                listener = None
            connection.close()
            time.sleep(min(idle_seconds, 1.0))
    if listener is not None:
        listener.close()
    return total
