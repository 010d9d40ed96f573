"""Outbox and inbox (SPEC §3): atomicity, exactly-once publication under concurrency, leases, retries, dead
rows, retention and per-key ordering — on PostgreSQL with real threads."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone

from apps.outbox.contracts import Message
from apps.outbox.inbox import inbox_consume
from apps.outbox.models import InboxEntry, OutboxMessage, OutboxStatus
from apps.outbox.relay import claim, relay_once
from apps.outbox.services import OutboxError, outbox_enqueue, outbox_requeue, outbox_retention
from apps.outbox.tasks import deliver_envelope
from apps.outbox.testing import drain, temporary_consumer


def enqueue(n: int, *, topic: str = "test.event", key: str | None = None) -> list[int]:
    with transaction.atomic():
        return [outbox_enqueue(topic=topic, payload={"n": i}, key=key).pk for i in range(n)]


def collector(into: list[Message]):
    lock = threading.Lock()

    def publish(items):
        with lock:
            into.extend(m for m, _ in items)
        return len(items)

    return publish


@pytest.mark.django_db(transaction=True)
def test_enqueue_outside_a_transaction_is_refused():
    with pytest.raises(OutboxError, match="inside a transaction"):
        outbox_enqueue(topic="test.event", payload={})
    assert OutboxMessage.objects.count() == 0


@pytest.mark.django_db
def test_payload_must_be_json():
    with pytest.raises(OutboxError, match="JSON"), transaction.atomic():
        outbox_enqueue(topic="test.event", payload={"x": object()})


@pytest.mark.django_db(transaction=True)
def test_rows_written_in_a_rolled_back_transaction_never_publish():
    with pytest.raises(RuntimeError), transaction.atomic():
        outbox_enqueue(topic="test.event", payload={"n": 1})
        raise RuntimeError("the business change failed")
    published: list[Message] = []

    assert relay_once(publish=collector(published)) == 0
    assert published == []
    assert OutboxMessage.objects.count() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_four_concurrent_relays_publish_10000_rows_exactly_once(require_postgres):
    rows = [OutboxMessage(topic="test.event", payload={"n": i}) for i in range(10_000)]
    OutboxMessage.objects.bulk_create(rows, batch_size=2000)
    published: list[Message] = []
    publish = collector(published)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            while relay_once(batch_size=200, publish=publish):
                pass
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    ids = [m.id for m in published]
    assert errors == []
    assert len(ids) == 10_000
    assert len(set(ids)) == 10_000
    assert OutboxMessage.objects.filter(status=OutboxStatus.INFLIGHT).count() == 10_000


@pytest.mark.django_db
def test_rows_of_a_relay_that_died_after_claiming_are_published_after_the_lease(time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    ids = enqueue(3)
    crashed = claim(batch_size=10)  # claimed, never published: the relay process died here
    assert [m.id for m in crashed] == ids
    published: list[Message] = []

    assert relay_once(publish=collector(published)) == 0  # still leased
    time_machine.shift(timedelta(seconds=121))
    assert relay_once(publish=collector(published)) == 3

    assert [m.id for m in published] == ids


@pytest.mark.django_db
def test_a_consumer_handed_the_same_message_twice_applies_it_once():
    applied: list[int] = []

    def handle(message: Message) -> None:
        with inbox_consume(message) as first:
            if first:
                applied.append(message.payload["n"])

    with temporary_consumer("test.event", handle):
        enqueue(1)
        [message] = claim(batch_size=10)
        deliver_envelope(message.to_envelope())
        deliver_envelope(message.to_envelope())  # redelivered (e.g. after a worker crash)

    assert applied == [0]
    assert InboxEntry.objects.count() == 1
    assert OutboxMessage.objects.get().status == OutboxStatus.DONE


@pytest.mark.django_db
@override_settings(OUTBOX={**__import__("django.conf").conf.settings.OUTBOX, "MAX_ATTEMPTS": 3})
def test_a_row_becomes_dead_after_n_failures_and_requeue_brings_it_back(time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    healthy = {"value": False}

    def handle(message: Message) -> None:
        if not healthy["value"]:
            raise ConnectionError("insurer unreachable")

    with temporary_consumer("test.event", handle):
        [row_id] = enqueue(1)
        for _ in range(3):
            drain()
            time_machine.shift(timedelta(minutes=30))
        row = OutboxMessage.objects.get(pk=row_id)
        assert (row.status, row.attempts) == (OutboxStatus.DEAD, 3)
        assert row.last_error == "ConnectionError: insurer unreachable"
        assert "Traceback" in row.last_traceback
        assert drain() == []  # dead rows are not retried

        healthy["value"] = True
        assert outbox_requeue(ids=[row_id]) == 1
        assert [m.id for m in drain()] == [row_id]

    row.refresh_from_db()
    assert (row.status, row.attempts) == (OutboxStatus.DONE, 0)


@pytest.mark.django_db
def test_outbox_requeue_command_requeues_dead_rows():
    [row_id] = enqueue(1)
    OutboxMessage.objects.filter(pk=row_id).update(status=OutboxStatus.DEAD, attempts=10)

    call_command("outbox_requeue", "--all-dead")

    assert OutboxMessage.objects.get(pk=row_id).status == OutboxStatus.PENDING


@pytest.mark.django_db
def test_failures_back_off_with_jitter_and_a_consumer_delay_is_honoured(time_machine):
    from apps.outbox.services import RetryLater

    time_machine.move_to(timezone.now(), tick=False)

    def handle(message: Message) -> None:
        raise RetryLater("insurer said 429", delay_seconds=42)

    with temporary_consumer("test.event", handle):
        [row_id] = enqueue(1)
        drain()

    row = OutboxMessage.objects.get(pk=row_id)
    assert (row.status, row.attempts) == (OutboxStatus.PENDING, 1)
    assert row.available_at == timezone.now() + timedelta(seconds=42)


@pytest.mark.django_db
def test_a_publish_failure_does_not_count_an_attempt():
    [row_id] = enqueue(1)

    def broker_down(items):
        return 0

    assert relay_once(publish=broker_down) == 0

    row = OutboxMessage.objects.get(pk=row_id)
    assert (row.status, row.attempts, row.lease_token) == (OutboxStatus.PENDING, 0, None)


@pytest.mark.django_db
def test_retention_deletes_only_done_rows_older_than_the_window(time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    old_done, old_pending, old_inflight, old_dead = enqueue(4)
    OutboxMessage.objects.filter(pk=old_done).update(status=OutboxStatus.DONE, done_at=timezone.now())
    OutboxMessage.objects.filter(pk=old_inflight).update(status=OutboxStatus.INFLIGHT)
    OutboxMessage.objects.filter(pk=old_dead).update(status=OutboxStatus.DEAD)
    time_machine.shift(timedelta(hours=25))
    [recent_done] = enqueue(1)
    OutboxMessage.objects.filter(pk=recent_done).update(status=OutboxStatus.DONE, done_at=timezone.now())

    assert outbox_retention(batch_size=1) == 1

    assert set(OutboxMessage.objects.values_list("pk", flat=True)) == {old_pending, old_inflight, old_dead, recent_done}


@pytest.mark.django_db
def test_only_one_row_per_key_is_in_flight_and_later_ones_wait():
    first, second = enqueue(2, key="member:1")
    [third] = enqueue(1, key="member:2")

    assert [m.id for m in claim(batch_size=10)] == [first, third]
    assert claim(batch_size=10) == []  # `second` waits for `first`
    OutboxMessage.objects.filter(pk=first).update(status=OutboxStatus.DONE)
    assert [m.id for m in claim(batch_size=10)] == [second]


@pytest.mark.django_db
def test_a_dead_row_blocks_later_rows_of_its_key_until_purged():
    from apps.outbox.services import outbox_purge_dead

    first, second = enqueue(2, key="member:1")
    OutboxMessage.objects.filter(pk=first).update(status=OutboxStatus.DEAD)

    assert claim(batch_size=10) == []
    outbox_purge_dead(ids=[first])
    assert [m.id for m in claim(batch_size=10)] == [second]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_events_sharing_a_key_take_effect_in_order_with_concurrent_workers(require_postgres):
    applied: dict[str, list[int]] = defaultdict(list)
    lock = threading.Lock()

    def handle(message: Message) -> None:
        with inbox_consume(message) as first:
            if first:
                with lock:
                    applied[message.key].append(message.payload["seq"])

    with transaction.atomic():
        for seq in range(25):
            for k in range(8):
                outbox_enqueue(topic="test.ordered", payload={"seq": seq}, key=f"k{k}")

    errors: list[BaseException] = []

    def worker() -> None:
        try:
            idle = 0
            while idle < 20:
                batch: list[Message] = []
                if relay_once(batch_size=5, publish=collector(batch)):
                    idle = 0
                    for message in batch:
                        deliver_envelope(message.to_envelope())
                else:
                    idle += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    with temporary_consumer("test.ordered", handle):
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert errors == []
    assert OutboxMessage.objects.exclude(status=OutboxStatus.DONE).count() == 0
    assert dict(applied) == {f"k{k}": list(range(25)) for k in range(8)}


@pytest.mark.django_db
def test_stats_command_and_metrics(client):
    enqueue(2)
    [dead] = enqueue(1)
    OutboxMessage.objects.filter(pk=dead).update(status=OutboxStatus.DEAD)
    from io import StringIO

    out = StringIO()
    call_command("outbox_stats", "--json", stdout=out)
    text = client.get("/metrics").content.decode()

    assert '"pending": 2' in out.getvalue()
    assert '"dead": 1' in out.getvalue()
    assert "keel_outbox_pending 2.0" in text
    assert "keel_outbox_dead 1.0" in text
    assert "keel_outbox_commit_to_publish_seconds_bucket" in text
