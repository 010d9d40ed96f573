"""outbox_enqueue, the commit nudge, requeue/purge of dead rows, retention."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from io import StringIO
from unittest import mock

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from apps.common.logging import current_correlation_id
from apps.outbox.models import InboxEntry, OutboxMessage, OutboxStatus
from apps.outbox.relay import relay_once
from apps.outbox.services import (
    NUDGE_FLAG,
    OutboxError,
    outbox_enqueue,
    outbox_purge_dead,
    outbox_requeue,
    outbox_retention,
)

from .conftest import enqueue


@pytest.mark.django_db(transaction=True)
def test_enqueue_outside_a_transaction_is_refused():
    with pytest.raises(OutboxError, match="inside a transaction"):
        outbox_enqueue(topic="test.event", payload={"n": 1})

    assert OutboxMessage.objects.count() == 0


@pytest.mark.django_db
def test_a_payload_that_is_not_json_is_refused_and_nothing_is_written():
    with pytest.raises(OutboxError, match="JSON"), transaction.atomic():
        outbox_enqueue(topic="test.event", payload={"x": object()})

    assert OutboxMessage.objects.count() == 0


@pytest.mark.django_db
def test_enqueue_stores_json_payload_correlation_id_and_delay(time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    import structlog

    with structlog.contextvars.bound_contextvars(request_id="req-42"), transaction.atomic():
        row = outbox_enqueue(
            topic="test.event", payload={"amount": Decimal("10.50")}, key="employee:7", delay_seconds=30
        )
        assert current_correlation_id() == "req-42"

    row.refresh_from_db()
    assert row.payload == {"amount": "10.50"}
    assert row.headers == {"correlation_id": "req-42"}
    assert (row.status, row.attempts, row.key) == (OutboxStatus.PENDING, 0, "employee:7")
    assert row.available_at == timezone.now() + timedelta(seconds=30)


@pytest.mark.django_db(transaction=True)
def test_rows_written_in_a_rolled_back_transaction_never_publish(published):
    with pytest.raises(RuntimeError), transaction.atomic():
        outbox_enqueue(topic="test.event", payload={"n": 1})
        raise RuntimeError("the business change failed")

    assert relay_once(publish=published) == 0
    assert published.ids == []
    assert OutboxMessage.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_one_nudge_per_committed_transaction_and_none_for_a_rolled_back_one(settings):
    settings.OUTBOX = {**settings.OUTBOX, "NUDGE_ON_COMMIT": True}
    cache.delete(NUDGE_FLAG)
    with mock.patch("apps.outbox.services.current_app.send_task") as send:
        with pytest.raises(RuntimeError), transaction.atomic():
            outbox_enqueue(topic="test.event", payload={"n": 0})
            raise RuntimeError("rolled back")
        assert send.call_count == 0

        with transaction.atomic():
            for n in range(3):
                outbox_enqueue(topic="test.event", payload={"n": n})
        assert send.call_count == 1  # one nudge for three rows; the rollback above did not silence it
        assert send.call_args.args == ("outbox.relay",)
        assert send.call_args.kwargs["queue"] == "outbox"

        cache.delete(NUDGE_FLAG)  # the relay clears the flag when it starts
        with transaction.atomic():
            outbox_enqueue(topic="test.event", payload={"n": 3})
        assert send.call_count == 2


@pytest.mark.django_db(transaction=True)
def test_a_broker_failure_in_the_nudge_does_not_fail_the_commit(settings):
    settings.OUTBOX = {**settings.OUTBOX, "NUDGE_ON_COMMIT": True}
    cache.delete(NUDGE_FLAG)
    with mock.patch("apps.outbox.services.current_app.send_task", side_effect=ConnectionError("redis down")):
        with transaction.atomic():
            outbox_enqueue(topic="test.event", payload={"n": 1})

    assert OutboxMessage.objects.filter(status=OutboxStatus.PENDING).count() == 1


@pytest.mark.django_db
def test_requeue_needs_a_selection_and_an_empty_selection_requeues_nothing():
    [dead] = enqueue(1)
    OutboxMessage.objects.filter(pk=dead).update(status=OutboxStatus.DEAD, attempts=10)

    with pytest.raises(OutboxError):
        outbox_requeue()
    assert outbox_requeue(ids=[]) == 0
    assert OutboxMessage.objects.get(pk=dead).status == OutboxStatus.DEAD


@pytest.mark.django_db
def test_requeue_only_touches_dead_rows_of_the_selection(time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    dead_a, dead_b, pending = enqueue(3)
    OutboxMessage.objects.filter(pk__in=[dead_a, dead_b]).update(
        status=OutboxStatus.DEAD, attempts=10, available_at=timezone.now() - timedelta(hours=1)
    )

    assert outbox_requeue(ids=[dead_a, pending]) == 1

    rows = {r.pk: r for r in OutboxMessage.objects.all()}
    assert (rows[dead_a].status, rows[dead_a].attempts, rows[dead_a].available_at) == (
        OutboxStatus.PENDING,
        0,
        timezone.now(),
    )
    assert (rows[dead_b].status, rows[dead_b].attempts) == (OutboxStatus.DEAD, 10)
    assert (rows[pending].status, rows[pending].attempts) == (OutboxStatus.PENDING, 0)


@pytest.mark.django_db
def test_outbox_requeue_command_by_id_topic_and_all_dead():
    a, b = enqueue(2, topic="test.a")
    [c] = enqueue(1, topic="test.b")
    OutboxMessage.objects.update(status=OutboxStatus.DEAD, attempts=10)
    out = StringIO()

    call_command("outbox_requeue", "--id", str(a), stdout=out)
    call_command("outbox_requeue", "--topic", "test.b", stdout=out)
    assert set(OutboxMessage.objects.filter(status=OutboxStatus.DEAD).values_list("pk", flat=True)) == {b}
    call_command("outbox_requeue", "--all-dead", stdout=out)

    assert out.getvalue().splitlines() == ["Requeued 1 dead row(s)."] * 3
    assert OutboxMessage.objects.filter(status=OutboxStatus.PENDING).count() == 3
    assert c


@pytest.mark.django_db
def test_outbox_requeue_command_refuses_to_guess():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("outbox_requeue")


@pytest.mark.django_db
def test_purge_deletes_only_dead_rows():
    dead, pending = enqueue(2)
    OutboxMessage.objects.filter(pk=dead).update(status=OutboxStatus.DEAD)

    assert outbox_purge_dead(ids=[dead, pending]) == 1

    assert list(OutboxMessage.objects.values_list("pk", flat=True)) == [pending]


@pytest.mark.django_db
def test_retention_deletes_only_done_rows_older_than_the_window(time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    old_done_1, old_done_2, old_pending, old_inflight, old_dead = enqueue(5)
    now = timezone.now()
    OutboxMessage.objects.filter(pk__in=[old_done_1, old_done_2]).update(status=OutboxStatus.DONE, done_at=now)
    OutboxMessage.objects.filter(pk=old_inflight).update(
        status=OutboxStatus.INFLIGHT, leased_until=now, lease_token="00000000-0000-0000-0000-000000000001"
    )
    OutboxMessage.objects.filter(pk=old_dead).update(status=OutboxStatus.DEAD)
    InboxEntry.objects.create(consumer="c", message_id=old_done_1, processed_at=now)
    time_machine.shift(timedelta(hours=24, seconds=1))
    [recent_done] = enqueue(1)
    OutboxMessage.objects.filter(pk=recent_done).update(status=OutboxStatus.DONE, done_at=timezone.now())
    InboxEntry.objects.create(consumer="c", message_id=recent_done, processed_at=timezone.now())

    assert outbox_retention(batch_size=1) == 2  # two rounds of one row each

    assert set(OutboxMessage.objects.values_list("pk", flat=True)) == {old_pending, old_inflight, old_dead, recent_done}
    assert list(InboxEntry.objects.values_list("message_id", flat=True)) == [recent_done]


@pytest.mark.django_db
def test_retention_is_bounded_per_run(time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    enqueue(5)
    OutboxMessage.objects.update(status=OutboxStatus.DONE, done_at=timezone.now())
    time_machine.shift(timedelta(days=2))

    assert outbox_retention(batch_size=2, max_batches=2) == 4
    assert OutboxMessage.objects.count() == 1
