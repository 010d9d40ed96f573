"""Celery entry points, thin: the relay (nudged on commit + beat safety net), delivery, retention.

The relay is `relay.relay_until_empty`, delivery is `delivery.deliver_envelope` (re-exported here for callers
that drive delivery directly: tests and `apps.outbox.testing`), retention is `services.outbox_retention`.
The worker-side lease keeper learns about received rows from Celery's `task_received` signal.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task
from celery.signals import task_received, worker_init

from apps.outbox.contracts import Message
from apps.outbox.delivery import (
    deliver_envelope,
    deliver_message,
    envelopes_of_task,
    holding,
    leases,
    record_failure,
)
from apps.outbox.relay import relay_until_empty
from apps.outbox.services import clear_nudge_flag, outbox_retention

__all__ = ["deliver", "deliver_envelope", "deliver_many", "deliver_message", "record_failure", "relay", "retention"]

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
    """A chunk published under backlog: each row is delivered (and succeeds or fails) on its own; the rows
    still waiting in the chunk keep their leases while earlier ones run."""
    with holding([Message.from_envelope(e) for e in envelopes]):
        for envelope in envelopes:
            deliver_envelope(envelope)


@shared_task(name="outbox.retention", ignore_result=True)
def retention() -> int:
    from apps.audit.services import job_run

    with job_run("outbox.retention") as run:
        run.counts["deleted"] = outbox_retention()
        return int(run.counts["deleted"])


@task_received.connect
def _hold_received_rows(request: Any = None, **_: Any) -> None:
    """Rows prefetched by this worker keep their lease while they wait for a free thread (ADR 0024)."""
    if request is None:
        return
    messages = envelopes_of_task(getattr(request, "name", ""), getattr(request, "args", ()))
    if messages:
        leases.hold(messages, started=False)


@worker_init.connect
def _note_the_served_queues(sender: Any = None, **_: Any) -> None:
    """Tell delivery which queues this worker consumes (`-Q` / `-X`), so a consumer's next step whose queue is
    among them is delivered by this worker at once instead of through the relay and the broker (ADR 0070). This
    module is imported by the worker (task discovery) before it sends `worker_init`."""
    from apps.outbox import delivery

    queues = getattr(getattr(getattr(sender, "app", None), "amqp", None), "queues", None)
    delivery.served_queues = frozenset(queues.consume_from) if queues is not None else frozenset()
