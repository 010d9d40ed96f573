"""The relay: exactly-once publication under concurrency, leases, publish failures, per-key ordering."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from datetime import timedelta
from unittest import mock

import pytest
from django.db import connection
from django.utils import timezone

from apps.outbox.claims import claim
from apps.outbox.contracts import Message
from apps.outbox.inbox import inbox_consume
from apps.outbox.models import OutboxMessage, OutboxStatus
from apps.outbox.relay import relay_forever, relay_once, relay_until_empty
from apps.outbox.relay import relay_until_empty as real_relay_until_empty
from apps.outbox.services import outbox_purge_dead
from apps.outbox.tasks import deliver_envelope

from .conftest import Collector, enqueue


def run_threads(target, n: int) -> list[BaseException]:
    """Run `target` in `n` threads, each with its own database connection (closed at thread end)."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a relay thread hung"
    return errors


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_four_concurrent_relays_publish_10000_rows_exactly_once(require_postgres, published):
    now = timezone.now()
    OutboxMessage.objects.bulk_create(
        [OutboxMessage(topic="test.event", payload={"n": i}, created_at=now, available_at=now) for i in range(10_000)],
        batch_size=2000,
    )

    def relay() -> None:
        while relay_once(batch_size=200, publish=published):
            pass

    errors = run_threads(relay, 4)

    ids = published.ids
    assert errors == []
    assert len(ids) == 10_000
    assert len(set(ids)) == 10_000
    assert OutboxMessage.objects.filter(status=OutboxStatus.INFLIGHT).count() == 10_000
    assert OutboxMessage.objects.filter(lease_token__isnull=True).count() == 0


@pytest.mark.django_db
def test_claim_is_one_short_transaction_of_two_statements_on_postgresql(django_assert_num_queries):
    enqueue(50)

    # PostgreSQL: SAVEPOINT, reclaim expired leases, claim (one UPDATE … RETURNING), RELEASE SAVEPOINT. The
    # test runs inside a transaction, so claim() is not the outermost one and leaves synchronous_commit
    # alone (it must not relax a caller's). SQLite's ORM path selects, updates and reads back: 2 more.
    with django_assert_num_queries(4 if connection.vendor == "postgresql" else 6):
        claimed = claim(batch_size=20)

    assert len(claimed) == 20
    assert len({m.lease_token for m in claimed}) == 1


@pytest.mark.django_db
def test_rows_of_a_relay_that_died_after_claiming_are_published_after_the_lease(time_machine, published, settings):
    time_machine.move_to(timezone.now(), tick=False)
    ids = enqueue(3)
    crashed = claim(batch_size=10)  # claimed, never published: the relay process died here
    assert [m.id for m in crashed] == ids

    time_machine.shift(timedelta(seconds=settings.OUTBOX["LEASE_SECONDS"] - 1))
    assert relay_once(publish=published) == 0  # still leased to the dead relay
    time_machine.shift(timedelta(seconds=2))
    assert relay_once(publish=published) == 3

    assert published.ids == ids
    assert {m.lease_token for m in published.messages}.isdisjoint({m.lease_token for m in crashed})
    assert list(OutboxMessage.objects.values_list("attempts", flat=True)) == [0, 0, 0]


@pytest.mark.django_db
def test_a_publish_failure_does_not_count_an_attempt_and_stops_the_batch(time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    first, second, third = enqueue(3)
    handed_over: list[int] = []

    def broker_dies_after_one(message: Message, queue: str) -> None:
        if handed_over:
            raise ConnectionError("redis went away")
        handed_over.append(message.id)

    assert relay_once(publish=broker_dies_after_one) == 1

    rows = {r.pk: r for r in OutboxMessage.objects.all()}
    assert handed_over == [first]
    assert rows[first].status == OutboxStatus.INFLIGHT
    for pk in (second, third):
        assert (rows[pk].status, rows[pk].attempts, rows[pk].lease_token) == (OutboxStatus.PENDING, 0, None)
        assert rows[pk].available_at == timezone.now() + timedelta(seconds=1)
    assert relay_once(publish=Collector()) == 0  # released rows wait a moment for the broker
    time_machine.shift(timedelta(seconds=1))
    retry = Collector()
    assert relay_once(publish=retry) == 2
    assert retry.ids == [second, third]


@pytest.mark.django_db
def test_relay_until_empty_stops_when_nothing_is_due(published):
    enqueue(25)

    assert relay_until_empty(batch_size=10, publish=published) == 25
    assert relay_until_empty(batch_size=10, publish=published) == 0


@pytest.mark.django_db
def test_only_one_row_per_key_is_in_flight_and_later_ones_wait():
    first, second = enqueue(2, key="member:1")
    [third] = enqueue(1, key="member:2")
    [unkeyed] = enqueue(1)

    assert [m.id for m in claim(batch_size=10)] == [first, third, unkeyed]
    assert claim(batch_size=10) == []  # `second` waits for `first`
    OutboxMessage.objects.filter(pk=first).update(
        status=OutboxStatus.DONE, done_at=timezone.now(), leased_until=None, lease_token=None
    )
    assert [m.id for m in claim(batch_size=10)] == [second]


@pytest.mark.django_db
def test_a_retrying_row_holds_back_later_rows_of_its_key(time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    first, _second = enqueue(2, key="member:1")
    OutboxMessage.objects.filter(pk=first).update(available_at=timezone.now() + timedelta(minutes=5), attempts=1)

    assert claim(batch_size=10) == []
    time_machine.shift(timedelta(minutes=5))
    assert [m.id for m in claim(batch_size=10)] == [first]


@pytest.mark.django_db
def test_a_dead_row_blocks_later_rows_of_its_key_until_purged():
    first, second = enqueue(2, key="member:1")
    OutboxMessage.objects.filter(pk=first).update(status=OutboxStatus.DEAD)

    assert claim(batch_size=10) == []
    assert outbox_purge_dead(ids=[first]) == 1
    assert [m.id for m in claim(batch_size=10)] == [second]


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_events_sharing_a_key_take_effect_in_order_with_concurrent_workers(require_postgres, outbox_consumer):
    """4 workers, each looping relay_once + deliver (in shuffled order); 8 keys × 25 events, each in its own
    transaction. Each application is appended under a lock inside the consumer's transaction, so the lists
    are the order in which the effects committed."""
    applied: dict[str, list[int]] = defaultdict(list)
    lock = threading.Lock()

    def handle(message: Message) -> None:
        with inbox_consume(message) as first:
            if first:
                with lock:
                    applied[message.key or ""].append(message.payload["n"])

    outbox_consumer("test.ordered", handle)
    for n in range(25):
        for k in range(8):
            enqueue(1, topic="test.ordered", key=f"k{k}", start=n)

    def worker() -> None:
        deadline = time.monotonic() + 60
        mine = Collector()
        shuffle = random.Random(threading.get_ident()).shuffle
        while time.monotonic() < deadline:
            if relay_once(batch_size=10, publish=mine):
                batch = mine.take()
                shuffle(batch)  # Celery runs a batch's tasks in no particular order (several worker threads)
                for message in batch:
                    deliver_envelope(message.to_envelope())
            elif not OutboxMessage.objects.exclude(status=OutboxStatus.DONE).exists():
                return

    errors = run_threads(worker, 4)

    assert errors == []
    assert OutboxMessage.objects.exclude(status=OutboxStatus.DONE).count() == 0
    assert dict(applied) == {f"k{k}": list(range(25)) for k in range(8)}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_the_relay_loop_is_woken_by_a_commit_not_by_its_timer(require_postgres, published):
    """`relay_forever` waits up to 30 s between passes; a commit that wrote outbox rows must end the wait."""
    stop = threading.Event()
    passes: list[float] = []

    def counting_pass(**kwargs):
        passes.append(time.monotonic())
        return real_relay_until_empty(**kwargs)

    def loop() -> None:
        relay_forever(idle_seconds=30, should_stop=stop.is_set, publish=published)

    with mock.patch("apps.outbox.relay.relay_until_empty", side_effect=counting_pass):
        errors: list[BaseException] = []
        thread = threading.Thread(target=lambda: errors.extend(run_threads(loop, 1)))
        thread.start()
        deadline = time.monotonic() + 10
        while not passes and time.monotonic() < deadline:  # the first pass runs once it is listening
            time.sleep(0.01)
        ids = enqueue(3)
        while len(published.ids) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        stop.set()
        enqueue(1)  # wakes the loop so it sees the stop flag
        thread.join(timeout=10)

    assert errors == []
    assert not thread.is_alive()
    assert published.ids[:3] == ids
    assert len(passes) >= 2
    assert passes[1] - passes[0] < 5  # woken by the commit, long before its 30 s timer
