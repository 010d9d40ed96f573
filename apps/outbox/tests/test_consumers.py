"""Delivery to consumers: inbox idempotency, retries with backoff, dead rows, requeue, stale deliveries."""

from __future__ import annotations

import threading
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st

from apps.common.logging import current_correlation_id
from apps.outbox import registry
from apps.outbox.backoff import full_jitter_delay
from apps.outbox.claims import claim
from apps.outbox.contracts import Message
from apps.outbox.inbox import inbox_consume, inbox_seen
from apps.outbox.models import InboxEntry, OutboxMessage, OutboxStatus
from apps.outbox.relay import relay_once
from apps.outbox.services import RetryLater, outbox_enqueue, outbox_requeue
from apps.outbox.tasks import deliver_envelope, deliver_message
from apps.outbox.testing import drain

from .conftest import TOPIC, Collector, enqueue


@pytest.mark.django_db
def test_a_consumer_handed_the_same_message_twice_applies_it_once(outbox_consumer):
    applied: list[int] = []

    def handle(message: Message) -> None:
        with inbox_consume(message) as first:
            if first:
                applied.append(message.payload["n"])

    outbox_consumer(TOPIC, handle)
    enqueue(1)
    [message] = claim(batch_size=10)

    assert inbox_seen(message) is False
    deliver_envelope(message.to_envelope())
    with inbox_consume(message) as first:  # redelivered (e.g. after a worker crash): the inbox absorbs it
        assert first is False

    assert applied == [0]
    assert inbox_seen(message) is True
    assert inbox_seen(f"test:{TOPIC}", message.id) is True
    assert inbox_seen("another.consumer", message.id) is False
    assert list(InboxEntry.objects.values_list("consumer", "message_id")) == [(f"test:{TOPIC}", message.id)]
    assert OutboxMessage.objects.get().status == OutboxStatus.DONE


@pytest.mark.django_db
def test_a_late_duplicate_of_a_consumed_message_does_not_reach_the_consumer(outbox_consumer):
    calls: list[int] = []
    outbox_consumer(TOPIC, lambda message: calls.append(message.id))
    enqueue(1)
    [message] = claim(batch_size=10)

    assert deliver_envelope(message.to_envelope()) is True
    assert deliver_envelope(message.to_envelope()) is False
    OutboxMessage.objects.all().delete()  # retention removed it
    assert deliver_envelope(message.to_envelope()) is False

    assert calls == [message.id]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_deliveries_of_one_message_apply_it_once(require_postgres, outbox_consumer):
    """The second delivery blocks on the inbox's unique index until the first commits, then sees a conflict."""
    applied: list[int] = []
    inside = threading.Event()
    release = threading.Event()

    def handle(message: Message) -> None:
        with inbox_consume(message) as first:
            if first:
                applied.append(message.id)
                inside.set()
                assert release.wait(timeout=10)

    outbox_consumer(TOPIC, handle)
    enqueue(1)
    [message] = claim(batch_size=10)

    def deliver() -> None:
        try:
            deliver_envelope(message.to_envelope())
        finally:
            connection.close()

    first = threading.Thread(target=deliver)
    first.start()
    assert inside.wait(timeout=10)
    second = threading.Thread(target=deliver)
    second.start()
    second.join(timeout=0.5)
    assert second.is_alive()  # waiting on the first delivery's inbox row
    release.set()
    first.join(timeout=10)
    second.join(timeout=10)

    assert applied == [message.id]
    assert InboxEntry.objects.count() == 1
    assert OutboxMessage.objects.get().status == OutboxStatus.DONE


@pytest.mark.django_db
def test_the_consumer_runs_with_the_writers_correlation_id(outbox_consumer):
    seen: list[str | None] = []
    outbox_consumer(TOPIC, lambda message: seen.append(current_correlation_id()))
    import structlog

    with structlog.contextvars.bound_contextvars(request_id="req-7"), transaction.atomic():
        outbox_enqueue(topic=TOPIC, payload={})
    [without] = enqueue(1)
    drain()

    assert seen == ["req-7", f"outbox:{without}"]
    assert current_correlation_id() is None


@pytest.mark.django_db
def test_a_row_becomes_dead_after_n_failures_and_requeue_brings_it_back(time_machine, settings, outbox_consumer):
    settings.OUTBOX = {**settings.OUTBOX, "MAX_ATTEMPTS": 3}
    time_machine.move_to(timezone.now(), tick=False)
    healthy = False

    def handle(message: Message) -> None:
        if not healthy:
            raise ConnectionError("insurer unreachable")

    outbox_consumer(TOPIC, handle)
    [row_id] = enqueue(1)
    for attempt in range(1, 4):
        assert [m.id for m in drain()] == [row_id]
        row = OutboxMessage.objects.get(pk=row_id)
        assert row.attempts == attempt
        time_machine.shift(timedelta(seconds=settings.OUTBOX["BACKOFF_CAP_SECONDS"]))

    assert (row.status, row.lease_token, row.leased_until) == (OutboxStatus.DEAD, None, None)
    assert row.last_error == "ConnectionError: insurer unreachable"
    assert row.last_traceback.startswith("Traceback (most recent call last):")
    assert 'raise ConnectionError("insurer unreachable")' in row.last_traceback
    assert drain() == []  # dead rows are not retried

    healthy = True
    assert outbox_requeue(ids=[row_id]) == 1
    assert [m.id for m in drain()] == [row_id]

    row.refresh_from_db()
    assert (row.status, row.attempts) == (OutboxStatus.DONE, 0)


@pytest.mark.django_db
def test_the_requeue_command_brings_a_dead_row_back_and_it_then_succeeds(settings, outbox_consumer):
    settings.OUTBOX = {**settings.OUTBOX, "MAX_ATTEMPTS": 1}
    healthy = False

    def handle(message: Message) -> None:
        if not healthy:
            raise ValueError("bad mapping")

    outbox_consumer(TOPIC, handle)
    [row_id] = enqueue(1)
    drain()
    assert OutboxMessage.objects.get(pk=row_id).status == OutboxStatus.DEAD

    healthy = True
    out = StringIO()
    call_command("outbox_requeue", "--id", str(row_id), stdout=out)

    assert out.getvalue() == "Requeued 1 dead row(s).\n"
    assert [m.id for m in drain()] == [row_id]
    assert OutboxMessage.objects.get(pk=row_id).status == OutboxStatus.DONE


@pytest.mark.django_db
def test_a_failure_backs_off_within_the_full_jitter_window(time_machine, settings, outbox_consumer):
    settings.OUTBOX = {**settings.OUTBOX, "BACKOFF_BASE_SECONDS": 2.0, "BACKOFF_CAP_SECONDS": 600.0}
    time_machine.move_to(timezone.now(), tick=False)

    def handle(message: Message) -> None:
        raise RuntimeError("boom")

    outbox_consumer(TOPIC, handle)
    [row_id] = enqueue(1)
    drain()

    row = OutboxMessage.objects.get(pk=row_id)
    assert (row.status, row.attempts) == (OutboxStatus.PENDING, 1)
    assert timezone.now() <= row.available_at <= timezone.now() + timedelta(seconds=4)  # uniform(0, 2 · 2¹)


@given(attempt=st.integers(min_value=0, max_value=10_000))
def test_full_jitter_delay_is_between_zero_and_the_capped_exponential(attempt):
    from django.conf import settings

    base, cap = settings.OUTBOX["BACKOFF_BASE_SECONDS"], settings.OUTBOX["BACKOFF_CAP_SECONDS"]

    assert 0 <= full_jitter_delay(attempt) <= min(cap, base * 2 ** min(attempt, 64))


@pytest.mark.django_db
def test_a_consumer_asking_to_retry_later_is_honoured(time_machine, outbox_consumer):
    time_machine.move_to(timezone.now(), tick=False)

    def handle(message: Message) -> None:
        raise RetryLater("insurer said 429", delay_seconds=42)

    outbox_consumer(TOPIC, handle)
    [row_id] = enqueue(1)
    drain()

    row = OutboxMessage.objects.get(pk=row_id)
    assert (row.status, row.attempts, row.last_error) == (OutboxStatus.PENDING, 1, "RetryLater: insurer said 429")
    assert row.available_at == timezone.now() + timedelta(seconds=42)


@pytest.mark.django_db
def test_a_topic_without_a_consumer_fails_visibly():
    [row_id] = enqueue(1, topic="test.nobody-listens")
    drain()

    row = OutboxMessage.objects.get(pk=row_id)
    assert (row.status, row.attempts) == (OutboxStatus.PENDING, 1)
    assert row.last_error == "LookupError: no consumer is registered for topic 'test.nobody-listens'"


@pytest.mark.django_db
def test_a_stale_delivery_failing_after_its_lease_was_taken_over_changes_nothing(
    time_machine, settings, outbox_consumer
):
    time_machine.move_to(timezone.now(), tick=False)
    outcome = {"fail": True}

    def handle(message: Message) -> None:
        if outcome["fail"]:
            raise TimeoutError("slow insurer")

    outbox_consumer(TOPIC, handle)
    [row_id] = enqueue(1)
    [stale] = claim(batch_size=10)
    time_machine.shift(timedelta(seconds=settings.OUTBOX["LEASE_SECONDS"] + 1))
    [current] = claim(batch_size=10)  # the lease expired: another relay re-published the row

    deliver_envelope(stale.to_envelope())  # the first delivery finally fails

    row = OutboxMessage.objects.get(pk=row_id)
    assert (row.status, row.attempts, str(row.lease_token)) == (OutboxStatus.INFLIGHT, 0, current.lease_token)
    outcome["fail"] = False
    deliver_envelope(current.to_envelope())
    assert OutboxMessage.objects.get(pk=row_id).status == OutboxStatus.DONE


@pytest.mark.django_db
def test_a_slow_consumer_that_succeeds_after_its_lease_expired_still_finishes_the_row(time_machine, settings):
    time_machine.move_to(timezone.now(), tick=False)
    applied: list[int] = []

    def handle(message: Message) -> None:
        with inbox_consume(message) as first:
            if first:
                applied.append(message.id)

    registry.register(TOPIC, handle, queue="default", name="test:slow")
    try:
        [row_id] = enqueue(1)
        [stale] = claim(batch_size=10)
        time_machine.shift(timedelta(seconds=settings.OUTBOX["LEASE_SECONDS"] + 1))
        [current] = claim(batch_size=10)

        deliver_envelope(stale.to_envelope())  # the old delivery commits first
        assert deliver_envelope(current.to_envelope()) is False  # the new one finds the row done
    finally:
        registry.unregister(TOPIC)

    assert applied == [row_id]
    assert OutboxMessage.objects.get(pk=row_id).status == OutboxStatus.DONE


@pytest.mark.django_db
def test_deliver_message_runs_the_handler_for_a_relayed_row(outbox_consumer):
    calls: list[Message] = []
    outbox_consumer(TOPIC, calls.append)
    [row_id] = enqueue(1)
    assert relay_once(publish=Collector()) == 1

    assert deliver_message(row_id) is True

    assert [(m.id, m.payload, m.attempt) for m in calls] == [(row_id, {"n": 0}, 0)]
    assert OutboxMessage.objects.get(pk=row_id).status == OutboxStatus.DONE


def test_a_topic_has_exactly_one_consumer():
    def one(message: Message) -> None: ...

    def other(message: Message) -> None: ...

    registry.register("test.once", one, queue="ledger")
    try:
        assert registry.register("test.once", one, queue="ledger").handler is one  # re-import: harmless
        with pytest.raises(registry.DuplicateConsumerError):
            registry.consumer("test.once", queue="ledger")(other)
        assert registry.get("test.once").name.endswith("one")
        assert {"outbox", "ledger"} <= registry.queues()
    finally:
        registry.unregister("test.once")
    assert registry.get("test.once") is None
