"""Celery entry points: the relay (nudged on commit + beat safety net), delivery to consumers, retention."""

from __future__ import annotations

import logging
import traceback
from datetime import timedelta
from typing import Any

import structlog
from celery import shared_task
from django.conf import settings
from django.db.models import F
from django.utils import timezone

from apps.outbox import registry
from apps.outbox.backoff import full_jitter_delay
from apps.outbox.contracts import Message
from apps.outbox.inbox import mark_done
from apps.outbox.models import OutboxMessage, OutboxStatus
from apps.outbox.relay import relay_until_empty
from apps.outbox.services import RetryLater, clear_nudge_flag, outbox_retention

log = logging.getLogger(__name__)


@shared_task(name="outbox.relay", ignore_result=True)
def relay() -> int:
    # Clear the "a relay is queued" flag before claiming, so a commit from now on queues the next relay.
    clear_nudge_flag()
    return relay_until_empty(max_seconds=5.0)


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


def deliver_envelope(envelope: dict[str, Any]) -> None:
    """Run the topic's consumer; success marks the row done, failure schedules a retry or makes it dead."""
    message = Message.from_envelope(envelope)
    spec = registry.get(message.topic)
    structlog.contextvars.bind_contextvars(
        correlation_id=message.headers.get("correlation_id") or f"outbox:{message.id}", outbox_message=message.id
    )
    try:
        if spec is None:
            raise LookupError(f"no consumer is registered for topic {message.topic!r}")
        spec.handler(message)
    except RetryLater as exc:
        record_failure(message, exc, delay_seconds=exc.delay_seconds)
    except Exception as exc:
        log.warning("outbox.consumer_failed", exc_info=True, extra={"topic": message.topic})
        record_failure(message, exc)
    else:
        mark_done(message.id)
    finally:
        structlog.contextvars.unbind_contextvars("correlation_id", "outbox_message")


def deliver_message(message_id: int) -> None:
    """Deliver one row directly (tests, `outbox_relay --inline`)."""
    row = OutboxMessage.objects.get(pk=message_id)
    deliver_envelope(
        Message(
            id=row.pk,
            topic=row.topic,
            key=row.key,
            payload=row.payload,
            headers=row.headers,
            attempt=row.attempts,
            created_at=row.created_at,
            lease_token=str(row.lease_token) if row.lease_token else None,
        ).to_envelope()
    )


def record_failure(message: Message, exc: BaseException, *, delay_seconds: float | None = None) -> None:
    """attempts + 1; back to pending after a full-jitter backoff (or the consumer's delay), or dead.

    Conditional on this delivery's lease: if the row was meanwhile re-claimed by another relay (lease
    expired) or finished, this stale failure changes nothing.
    """
    attempts = message.attempt + 1
    dead = attempts >= settings.OUTBOX["MAX_ATTEMPTS"]
    delay = delay_seconds if delay_seconds is not None else full_jitter_delay(attempts)
    filters: dict[str, Any] = {"pk": message.id, "status": OutboxStatus.INFLIGHT}
    if message.lease_token:
        filters["lease_token"] = message.lease_token
    OutboxMessage.objects.filter(**filters).update(
        status=OutboxStatus.DEAD if dead else OutboxStatus.PENDING,
        attempts=F("attempts") + 1,
        available_at=timezone.now() + timedelta(seconds=delay),
        leased_until=None,
        lease_token=None,
        last_error=f"{type(exc).__name__}: {exc}"[:4000],
        last_traceback="".join(traceback.format_exception(exc))[-20000:],
    )
