"""Delivery of relayed rows to their consumers, and the leases that keep a row claimed while it is worked on.

`deliver_envelope` runs one row's consumer (Celery's `outbox.deliver` / `outbox.deliver_many` tasks in
`tasks.py` are thin entry points to it). A row stays `inflight` under a short lease (OUTBOX["LEASE_SECONDS"],
default 15 s) that the worker holding it renews (`LeaseKeeper`), so a killed worker's rows come back in
seconds while a slow consumer keeps its row (ADR 0024).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone
from structlog.contextvars import bound_contextvars

from apps.outbox import metrics, registry
from apps.outbox.backoff import full_jitter_delay
from apps.outbox.claims import claim
from apps.outbox.contracts import Message
from apps.outbox.inbox import mark_done, rows_marked_done
from apps.outbox.models import OutboxMessage, OutboxStatus
from apps.outbox.services import Defer, RetryLater, rows_written

log = logging.getLogger(__name__)


# --- leases ----------------------------------------------------------------------------------------------


class LeaseKeeper:
    """Renews the leases of the rows this process holds, from one background thread per process.

    1. `hold(messages)` registers rows when a worker receives them (`task_received`: prefetched rows count
       too, so a backlog inside the worker is not re-published) and again when their consumer starts.
    2. Every OUTBOX["LEASE_SECONDS"] / 3 the thread pushes `leased_until` forward for every held row, in one
       conditional UPDATE (`status = 'inflight' AND lease_token` = the holder's): a row another relay has
       re-claimed, or one that is done, is never touched.
    3. `release(id)` when the consumer finished (either way). A row received but never started is renewed for
       at most OUTBOX["HOLD_UNSTARTED_SECONDS"] — a message lost with a broker connection must not be kept
       alive by a renewal that nobody will ever finish.
    A killed process renews nothing, so its rows' leases lapse and the relay re-publishes them in seconds.
    Database errors (PostgreSQL restarting) are logged and retried at the next tick.
    """

    def __init__(self, *, autostart: bool = True) -> None:
        self._autostart = autostart
        self._lock = threading.Lock()
        self._held: dict[int, tuple[str, float, bool]] = {}  # id → (lease token, since, started)
        self._thread: threading.Thread | None = None

    def hold(self, messages: Iterable[Message], *, started: bool) -> None:
        now = time.monotonic()
        with self._lock:
            for message in messages:
                if message.lease_token:
                    previous = self._held.get(message.id)
                    since = previous[1] if previous and not started else now
                    self._held[message.id] = (message.lease_token, since, started)
            if self._autostart:
                self._ensure_thread()

    def release(self, message_ids: Iterable[int]) -> None:
        with self._lock:
            for message_id in message_ids:
                self._held.pop(message_id, None)

    def held(self) -> dict[int, str]:
        """{row id: lease token} of the rows a renewal would extend now (drops expired unstarted holds)."""
        limit = float(settings.OUTBOX["HOLD_UNSTARTED_SECONDS"])
        now = time.monotonic()
        with self._lock:
            for message_id, (_, since, started) in list(self._held.items()):
                if not started and now - since > limit:
                    del self._held[message_id]
            return {message_id: token for message_id, (token, _, _) in self._held.items()}

    def renew(self) -> int:
        """Step 2 once (also called directly by tests). Returns how many rows were extended."""
        held = self.held()
        if not held:
            return 0
        until = timezone.now() + timedelta(seconds=float(settings.OUTBOX["LEASE_SECONDS"]))
        # Each row under its own holder's token (a claim shares one token across its batch: few groups).
        by_token: dict[str, list[int]] = {}
        for message_id, token in held.items():
            by_token.setdefault(token, []).append(message_id)
        match = Q()
        for token, ids in by_token.items():
            match |= Q(lease_token=token, pk__in=ids)
        renewed = OutboxMessage.objects.filter(match, status=OutboxStatus.INFLIGHT).update(leased_until=until)
        metrics.LEASES_RENEWED.inc(renewed)
        return renewed

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="outbox-lease-keeper", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(max(0.2, float(settings.OUTBOX["LEASE_SECONDS"]) / 3))
            try:
                self.renew()
            except Exception:
                log.warning("outbox.lease_renew_failed", exc_info=True)
            finally:
                connection.close()  # back to the pool between ticks (a broken one is replaced next tick)


leases = LeaseKeeper()


@contextmanager
def holding(messages: list[Message]) -> Iterator[None]:
    """Keep these rows' leases renewed while the block runs (a consumer's whole chunk)."""
    leases.hold(messages, started=True)
    try:
        yield
    finally:
        leases.release(m.id for m in messages)


def envelopes_of_task(name: str, args: Any) -> list[Message]:
    """The outbox rows a received Celery task carries (`outbox.deliver` / `outbox.deliver_many`), else []."""
    try:
        if name == "outbox.deliver":
            return [Message.from_envelope(args[0])]
        if name == "outbox.deliver_many":
            return [Message.from_envelope(e) for e in args[0]]
    except (IndexError, KeyError, TypeError, ValueError):
        return []
    return []


# --- delivery ----------------------------------------------------------------------------------------------


# --- carrying on: the next step in the same worker (ADR 0070) ---------------------------------------------

served_queues: frozenset[str] = frozenset()
"""The queues this process consumes: set by a Celery worker at start (`config/celery.py`); empty elsewhere, where
nothing carries on (the relay publishes every row)."""


def _carried_on(written: list[tuple[int, str]]) -> list[Message]:
    """Of the rows a consumer just wrote, claim (as a relay would: pending, due, first unfinished of their key) those
    whose consumer listens on a queue this worker serves, so this thread delivers them now instead of a relay
    publishing them to a queue this same worker reads (one relay hop and one queue wait fewer per step)."""
    if not served_queues or int(settings.OUTBOX["CARRY_ON_MAX"]) <= 0:
        return []
    ids = [row_id for row_id, topic in written if (spec := registry.get(topic)) and spec.queue in served_queues]
    if not ids:
        return []
    try:
        return claim(batch_size=len(ids), ids=ids)
    except Exception:  # the database away: the rows stay pending and the relay publishes them
        log.warning("outbox.carry_on_claim_failed", exc_info=True)
        return []


def deliver_envelope(envelope: dict[str, Any], *, carried: int = 0) -> bool:
    """Run the topic's consumer for one message, then carry on with the rows it wrote whose consumers this worker
    serves (`_carried_on`, up to OUTBOX["CARRY_ON_MAX"] steps deep; ADR 0070). Returns whether the consumer ran.

    1. Bind the message's correlation id (from its headers) into every log line of the consumer.
    2. Skip a delivery whose row is gone (retention), `done` or `dead`: a late duplicate of a consumed
       message, or one an operator has parked. One primary-key lookup; it also spares consumers that do
       external I/O a redundant call.
    3. Run the consumer, its lease renewed meanwhile. Success marks the row `done` (already done if the
       consumer used `inbox_consume`, in its own transaction). `Defer` puts it back without counting an
       attempt; any other failure records the error and schedules a retry, or makes the row dead.
    """
    message = Message.from_envelope(envelope)
    follow: list[Message] = []
    with (
        bound_contextvars(
            correlation_id=message.headers.get("correlation_id") or f"outbox:{message.id}",
            outbox_message=message.id,
        ),
        holding([message]),
    ):
        # A row carried on was claimed by this thread a moment ago: it is inflight, no need to ask.
        if not carried:
            status = OutboxMessage.objects.filter(pk=message.id).values_list("status", flat=True).first()
            if status is None or status in (OutboxStatus.DONE, OutboxStatus.DEAD):
                log.info("outbox.delivery_skipped", extra={"topic": message.topic, "status": status})
                return False
        spec = registry.get(message.topic)
        started = time.perf_counter()
        outcome = "error"
        try:
            if spec is None:
                raise LookupError(f"no consumer is registered for topic {message.topic!r}")
            with rows_written() as written, rows_marked_done() as marked_done:
                spec.handler(message)
            outcome = "ok"
        except Exception as exc:
            outcome = _record_unsuccessful(message, exc)
        else:
            # A consumer that used inbox_consume marked the row in its own, committed transaction: nothing to do.
            if message.id not in marked_done:
                mark_done(message.id)
            if carried < int(settings.OUTBOX["CARRY_ON_MAX"]):
                follow = _carried_on(written)
        finally:
            # Pipeline stage latency by topic (issue 14), observed in the worker that ran the consumer.
            metrics.CONSUMER_SECONDS.labels(message.topic, outcome).observe(time.perf_counter() - started)
    if follow:
        leases.hold(follow, started=False)  # claimed: renewed from now on, even while an earlier one runs
        for row in follow:
            metrics.CARRIED_ON.labels(row.topic).inc()
            deliver_envelope(row.to_envelope(), carried=carried + 1)
    return True


def _record_unsuccessful(message: Message, exc: Exception) -> str:
    """Step 3's other outcomes; returns the metric's outcome label. `Defer`: back without counting an attempt;
    `RetryLater`: a failure after the consumer's own delay (or the backoff, at least its minimum); anything else: a
    failure after the outbox's backoff (logged with its traceback), or dead at the attempt limit."""
    if isinstance(exc, Defer):
        log.info("outbox.consumer_deferred", extra={"topic": message.topic, "reason": str(exc)})
        record_deferral(message, exc)
        return "deferred"
    if isinstance(exc, RetryLater):
        log.info("outbox.consumer_retry_later", extra={"topic": message.topic, "reason": str(exc)})
        delay = exc.delay_seconds
        if delay is None and exc.min_delay_seconds is not None:
            delay = max(exc.min_delay_seconds, full_jitter_delay(message.attempt + 1))
        record_failure(message, exc, delay_seconds=delay, max_attempts=exc.max_attempts)
        return "retry"
    log.warning("outbox.consumer_failed", exc_info=exc, extra={"topic": message.topic})
    record_failure(message, exc)
    return "error"


def deliver_message(message_id: int) -> bool:
    """Deliver one row by id, with its current lease (tests, debugging). Returns whether the consumer ran."""
    return deliver_envelope(Message.from_row(OutboxMessage.objects.get(pk=message_id)).to_envelope())


def _lease_filters(message: Message) -> dict[str, Any]:
    filters: dict[str, Any] = {"pk": message.id, "status": OutboxStatus.INFLIGHT}
    if message.lease_token:
        filters["lease_token"] = message.lease_token
    return filters


def record_failure(
    message: Message, exc: BaseException, *, delay_seconds: float | None = None, max_attempts: int | None = None
) -> int:
    """attempts + 1; back to `pending` after a full-jitter backoff (or the consumer's own delay), or `dead`
    at OUTBOX["MAX_ATTEMPTS"] (or the consumer's own `max_attempts`), keeping the error and its traceback.

    One conditional UPDATE, `WHERE id = … AND status = 'inflight' AND lease_token = <this delivery's>`:
    - if the lease expired and another relay re-claimed the row, the newer delivery owns it and this stale
      failure changes nothing (the newer one will count its own outcome);
    - if a duplicate delivery already consumed it (`done`), a failure cannot resurrect it;
    - the attempt count and the dead decision are computed in the database from the row's current count.
    Returns 1 if the failure was recorded, else 0.
    """
    limit = int(max_attempts if max_attempts is not None else settings.OUTBOX["MAX_ATTEMPTS"])
    delay = delay_seconds if delay_seconds is not None else full_jitter_delay(message.attempt + 1)
    return OutboxMessage.objects.filter(**_lease_filters(message)).update(
        status=Case(
            When(attempts__gte=limit - 1, then=Value(OutboxStatus.DEAD.value)),
            default=Value(OutboxStatus.PENDING.value),
        ),
        attempts=F("attempts") + 1,
        available_at=timezone.now() + timedelta(seconds=max(0.0, delay)),
        leased_until=None,
        lease_token=None,
        last_error=f"{type(exc).__name__}: {exc}"[:4000],
        last_traceback="".join(traceback.format_exception(exc))[-20000:],
    )


def record_deferral(message: Message, exc: Defer) -> int:
    """Back to `pending` after `exc.delay_seconds`, attempts unchanged: the consumer did not try (a circuit
    open, an outbound rate limit spent), so the retry budget is not spent. Same lease condition as a failure.
    Returns 1 if recorded, else 0."""
    metrics.DEFERRED.labels(topic=message.topic).inc()
    return OutboxMessage.objects.filter(**_lease_filters(message)).update(
        status=OutboxStatus.PENDING,
        available_at=timezone.now() + timedelta(seconds=max(0.0, exc.delay_seconds)),
        leased_until=None,
        lease_token=None,
        last_error=f"deferred: {exc}"[:4000],
    )
