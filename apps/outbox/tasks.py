"""Celery entry points: the relay (nudged on commit + beat safety net), delivery to consumers, retention.

Tasks are thin: the relay is `relay.relay_until_empty`, delivery is `deliver_envelope` (called directly by
tests and `apps.outbox.testing`), retention is `services.outbox_retention`.
"""

from __future__ import annotations

import logging
import time
import traceback
from datetime import timedelta
from typing import Any

from celery import shared_task
from django.conf import settings
from django.db.models import Case, F, Value, When
from django.utils import timezone
from structlog.contextvars import bound_contextvars

from apps.outbox import registry
from apps.outbox.backoff import full_jitter_delay
from apps.outbox.contracts import Message
from apps.outbox.inbox import mark_done
from apps.outbox.metrics import CONSUMER_SECONDS
from apps.outbox.models import OutboxMessage, OutboxStatus
from apps.outbox.relay import relay_until_empty
from apps.outbox.services import RetryLater, clear_nudge_flag, outbox_retention

log = logging.getLogger(__name__)

# A relay task gives up after this long so the beat safety net and nudges interleave with other work.
RELAY_TASK_SECONDS = 5.0


@shared_task(name="outbox.relay", ignore_result=True)
def relay() -> int:
    """Nudged on commit and run by beat every second: relay until nothing is due (bounded in time)."""
    # Clear the "a relay is queued" flag before claiming, so a commit from now on queues the next relay.
    clear_nudge_flag()
    return relay_until_empty(max_seconds=RELAY_TASK_SECONDS)


@shared_task(name="outbox.deliver", ignore_result=True, acks_late=True)
def deliver(envelope: dict[str, Any]) -> None:
    deliver_envelope(envelope)


@shared_task(name="outbox.deliver_many", ignore_result=True, acks_late=True)
def deliver_many(envelopes: list[dict[str, Any]]) -> None:
    """A chunk published under backlog: each row is delivered (and succeeds or fails) on its own."""
    for envelope in envelopes:
        deliver_envelope(envelope)


@shared_task(name="outbox.retention", ignore_result=True)
def retention() -> int:
    from apps.audit.services import job_run

    with job_run("outbox.retention") as run:
        run.counts["deleted"] = outbox_retention()
        return int(run.counts["deleted"])


def deliver_envelope(envelope: dict[str, Any]) -> bool:
    """Run the topic's consumer for one message. Returns whether the consumer ran.

    1. Bind the message's correlation id (from its headers) into every log line of the consumer.
    2. Skip a delivery whose row is gone (retention), `done` or `dead`: a late duplicate of a consumed
       message, or one an operator has parked. One primary-key lookup; it also spares consumers that do
       external I/O a redundant call.
    3. Run the consumer. Success marks the row `done` (already done if the consumer used `inbox_consume`,
       in its own transaction). A failure records the error and schedules a retry, or makes the row dead.
    """
    message = Message.from_envelope(envelope)
    with bound_contextvars(
        correlation_id=message.headers.get("correlation_id") or f"outbox:{message.id}", outbox_message=message.id
    ):
        status = OutboxMessage.objects.filter(pk=message.id).values_list("status", flat=True).first()
        if status is None or status in (OutboxStatus.DONE, OutboxStatus.DEAD):
            log.info("outbox.delivery_skipped", extra={"topic": message.topic, "status": status})
            return False
        spec = registry.get(message.topic)
        started = time.perf_counter()
        try:
            if spec is None:
                raise LookupError(f"no consumer is registered for topic {message.topic!r}")
            spec.handler(message)
        except RetryLater as exc:
            CONSUMER_SECONDS.labels(message.topic, "retry").observe(time.perf_counter() - started)
            log.info("outbox.consumer_retry_later", extra={"topic": message.topic, "reason": str(exc)})
            record_failure(message, exc, delay_seconds=exc.delay_seconds)
        except Exception as exc:
            CONSUMER_SECONDS.labels(message.topic, "error").observe(time.perf_counter() - started)
            log.warning("outbox.consumer_failed", exc_info=True, extra={"topic": message.topic})
            record_failure(message, exc)
        else:
            CONSUMER_SECONDS.labels(message.topic, "ok").observe(time.perf_counter() - started)
            # A consumer that used inbox_consume already marked the row in its own transaction; this then
            # matches nothing.
            mark_done(message.id)
        return True


def deliver_message(message_id: int) -> bool:
    """Deliver one row by id, with its current lease (tests, debugging). Returns whether the consumer ran."""
    row = OutboxMessage.objects.get(pk=message_id)
    message = Message(
        id=row.pk,
        topic=row.topic,
        key=row.key,
        payload=row.payload,
        headers=row.headers,
        attempt=row.attempts,
        created_at=row.created_at,
        lease_token=str(row.lease_token) if row.lease_token else None,
    )
    return deliver_envelope(message.to_envelope())


def record_failure(message: Message, exc: BaseException, *, delay_seconds: float | None = None) -> int:
    """attempts + 1; back to `pending` after a full-jitter backoff (or the consumer's own delay), or `dead`
    at OUTBOX["MAX_ATTEMPTS"], keeping the error and its traceback.

    One conditional UPDATE, `WHERE id = … AND status = 'inflight' AND lease_token = <this delivery's>`:
    - if the lease expired and another relay re-claimed the row, the newer delivery owns it and this stale
      failure changes nothing (the newer one will count its own outcome);
    - if a duplicate delivery already consumed it (`done`), a failure cannot resurrect it;
    - the attempt count and the dead decision are computed in the database from the row's current count.
    Returns 1 if the failure was recorded, else 0.
    """
    max_attempts = int(settings.OUTBOX["MAX_ATTEMPTS"])
    delay = delay_seconds if delay_seconds is not None else full_jitter_delay(message.attempt + 1)
    filters: dict[str, Any] = {"pk": message.id, "status": OutboxStatus.INFLIGHT}
    if message.lease_token:
        filters["lease_token"] = message.lease_token
    return OutboxMessage.objects.filter(**filters).update(
        status=Case(
            When(attempts__gte=max_attempts - 1, then=Value(OutboxStatus.DEAD.value)),
            default=Value(OutboxStatus.PENDING.value),
        ),
        attempts=F("attempts") + 1,
        available_at=timezone.now() + timedelta(seconds=max(0.0, delay)),
        leased_until=None,
        lease_token=None,
        last_error=f"{type(exc).__name__}: {exc}"[:4000],
        last_traceback="".join(traceback.format_exception(exc))[-20000:],
    )
