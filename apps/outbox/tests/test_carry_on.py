"""A worker carries on with the rows its consumer wrote whose consumers it serves (ADR 0070): claimed as a relay
would claim them — pending, due, first unfinished of their key — delivered in the same thread, never published,
never twice; bounded in depth; nothing of it outside a worker that serves the next queue."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.db import transaction
from prometheus_client import REGISTRY

from apps.outbox import delivery
from apps.outbox.claims import claim
from apps.outbox.contracts import Message
from apps.outbox.inbox import inbox_consume
from apps.outbox.models import OutboxMessage, OutboxStatus
from apps.outbox.relay import relay_once
from apps.outbox.services import outbox_enqueue

from .conftest import Collector, enqueue

pytestmark = pytest.mark.django_db

FIRST, NEXT = "test.first", "test.next"


@pytest.fixture
def serving(monkeypatch) -> Callable[..., None]:
    def serve(*queues: str) -> None:
        monkeypatch.setattr(delivery, "served_queues", frozenset(queues))

    return serve


def writes_next(applied: list[str], *, key: str | None = None, delay_seconds: float = 0) -> Callable[[Message], None]:
    def handle(message: Message) -> None:
        with inbox_consume(message) as first:
            if first:
                applied.append(message.topic)
                outbox_enqueue(topic=NEXT, payload={"after": message.id}, key=key, delay_seconds=delay_seconds)

    return handle


def records(applied: list[str]) -> Callable[[Message], None]:
    def handle(message: Message) -> None:
        with inbox_consume(message) as first:
            if first:
                applied.append(message.topic)

    return handle


def deliver_first(published: Collector) -> None:
    assert relay_once(batch_size=10, publish=published) == 1
    (message,) = published.take()
    delivery.deliver_envelope(message.to_envelope())


def carried(topic: str) -> float:
    return REGISTRY.get_sample_value("keel_outbox_carried_on_total", {"topic": topic}) or 0.0


def test_the_next_step_served_here_runs_in_the_same_delivery_and_is_never_published(
    outbox_consumer, serving, published
):
    applied: list[str] = []
    outbox_consumer(FIRST, writes_next(applied), queue="q-first")
    outbox_consumer(NEXT, records(applied), queue="q-next")
    serving("q-first", "q-next")
    before = carried(NEXT)
    enqueue(1, topic=FIRST)

    deliver_first(published)

    assert applied == [FIRST, NEXT]
    assert list(OutboxMessage.objects.order_by("id").values_list("topic", "status")) == [
        (FIRST, OutboxStatus.DONE),
        (NEXT, OutboxStatus.DONE),
    ]
    assert OutboxMessage.objects.get(topic=NEXT).published_at is not None
    assert relay_once(batch_size=10, publish=published) == 0
    assert published.take() == []
    assert carried(NEXT) == before + 1


@pytest.mark.parametrize(
    ("served", "key", "delay_seconds", "earlier_open"),
    [
        pytest.param(("q-first",), None, 0, False, id="next queue served elsewhere"),
        pytest.param((), None, 0, False, id="not a worker"),
        pytest.param(("q-first", "q-next"), None, 30, False, id="delayed row"),
        pytest.param(("q-first", "q-next"), "k-1", 0, True, id="an earlier row of its key unfinished"),
    ],
)
def test_a_row_a_relay_would_not_claim_here_now_is_left_to_the_relay(
    outbox_consumer, serving, published, served, key, delay_seconds, earlier_open
):
    applied: list[str] = []
    outbox_consumer(FIRST, writes_next(applied, key=key, delay_seconds=delay_seconds), queue="q-first")
    outbox_consumer(NEXT, records(applied), queue="q-next")
    serving(*served)
    if earlier_open:
        with transaction.atomic():
            blocker = outbox_enqueue(topic=NEXT, payload={"blocker": True}, key=key, delay_seconds=3600)
    enqueue(1, topic=FIRST)
    first_id = OutboxMessage.objects.get(topic=FIRST).pk

    if earlier_open:  # the relay claims the FIRST row only (the blocker is not due)
        claimed = claim(batch_size=10, ids=[first_id])
        delivery.deliver_envelope(claimed[0].to_envelope())
    else:
        deliver_first(published)

    assert applied == [FIRST]
    written = OutboxMessage.objects.filter(topic=NEXT, payload__after=first_id).get()
    assert (written.status, written.published_at) == (OutboxStatus.PENDING, None)
    if earlier_open:
        assert OutboxMessage.objects.get(pk=blocker.pk).status == OutboxStatus.PENDING


def test_a_row_a_relay_claimed_first_is_not_claimed_again():
    (row_id,) = enqueue(1, topic=NEXT)
    assert [m.id for m in claim(batch_size=10)] == [row_id]
    assert claim(batch_size=1, ids=[row_id]) == []


def test_a_consumer_that_fails_after_writing_carries_nothing_on(outbox_consumer, serving, published):
    def fails(message: Message) -> None:
        with transaction.atomic():
            outbox_enqueue(topic=NEXT, payload={"after": message.id})
            raise RuntimeError("boom")

    applied: list[str] = []
    outbox_consumer(FIRST, fails, queue="q-first")
    outbox_consumer(NEXT, records(applied), queue="q-next")
    serving("q-first", "q-next")
    enqueue(1, topic=FIRST)

    deliver_first(published)

    assert applied == []
    assert not OutboxMessage.objects.filter(topic=NEXT).exists()
    assert OutboxMessage.objects.get(topic=FIRST).status == OutboxStatus.PENDING  # retried later, attempt 1
    assert OutboxMessage.objects.get(topic=FIRST).attempts == 1


def test_carrying_on_stops_after_carry_on_max_steps_and_the_relay_takes_the_rest(
    outbox_consumer, serving, published, settings
):
    settings.OUTBOX = {**settings.OUTBOX, "CARRY_ON_MAX": 2}
    steps: list[int] = []

    def again(message: Message) -> None:  # every step writes the next one of the same topic
        with inbox_consume(message) as first:
            if first:
                steps.append(message.id)
                outbox_enqueue(topic=FIRST, payload={"after": message.id})

    outbox_consumer(FIRST, again, queue="q-first")
    serving("q-first")
    enqueue(1, topic=FIRST)

    deliver_first(published)

    assert len(steps) == 3  # the delivered row, then 2 carried on
    assert OutboxMessage.objects.filter(status=OutboxStatus.DONE).count() == 3
    assert OutboxMessage.objects.filter(status=OutboxStatus.PENDING).count() == 1
    assert relay_once(batch_size=10, publish=published) == 1
