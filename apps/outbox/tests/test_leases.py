"""Short renewed leases (ADR 0024) and deferrals that spend no attempt (ADR 0025)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.outbox.claims import claim
from apps.outbox.contracts import Message
from apps.outbox.delivery import LeaseKeeper, envelopes_of_task
from apps.outbox.models import OutboxMessage, OutboxStatus
from apps.outbox.services import Defer, RetryLater
from apps.outbox.tasks import deliver_envelope

from .conftest import TOPIC, enqueue

pytestmark = pytest.mark.django_db


@pytest.mark.django_db(transaction=True)  # the renewing thread has its own connection: rows must be committed
def test_a_row_whose_consumer_is_still_working_keeps_its_lease_past_the_lease_time(
    outbox_consumer, settings, monkeypatch
):
    settings.OUTBOX = {**settings.OUTBOX, "LEASE_SECONDS": 0.6}
    monkeypatch.setattr("apps.outbox.delivery.leases", LeaseKeeper())  # its thread starts with these settings
    seen_leases: list[object] = []
    release = threading.Event()

    def slow(message: Message) -> None:
        first = OutboxMessage.objects.get(pk=message.id).leased_until
        release.wait(2.0)  # works for more than three lease times
        seen_leases.append((first, OutboxMessage.objects.get(pk=message.id).leased_until))

    outbox_consumer(TOPIC, slow)
    [row_id] = enqueue(1)
    [message] = claim(batch_size=10)
    timer = threading.Timer(1.9, release.set)
    timer.start()
    deliver_envelope(message.to_envelope())
    timer.join()

    [(first, last)] = seen_leases
    assert last > first + timedelta(seconds=1)  # renewed while the consumer ran
    row = OutboxMessage.objects.get(pk=row_id)
    assert row.status == OutboxStatus.DONE
    assert row.attempts == 0


def test_a_row_nobody_renews_is_reclaimed_after_the_short_lease(settings):
    settings.OUTBOX = {**settings.OUTBOX, "LEASE_SECONDS": 0.3}
    [row_id] = enqueue(1)
    [first] = claim(batch_size=10)  # its worker is then killed: nothing renews the lease
    assert claim(batch_size=10) == []

    time.sleep(0.4)
    [again] = claim(batch_size=10)

    assert again.id == row_id == first.id
    assert again.lease_token != first.lease_token
    assert OutboxMessage.objects.get(pk=row_id).attempts == 0  # a lapsed lease is not a failed attempt


def test_renewal_extends_only_rows_still_held_under_the_holders_token(settings):
    settings.OUTBOX = {**settings.OUTBOX, "LEASE_SECONDS": 30}
    ids = enqueue(3)
    claimed = claim(batch_size=10)
    OutboxMessage.objects.filter(pk=ids[1]).update(status=OutboxStatus.DONE, done_at=timezone.now())
    stale = Message(**{**{f: getattr(claimed[2], f) for f in Message.__slots__}, "lease_token": "0" * 32})
    before = {r.pk: r.leased_until for r in OutboxMessage.objects.all()}
    keeper = LeaseKeeper(autostart=False)

    keeper.hold([claimed[0], claimed[1], stale], started=True)
    assert keeper.renew() == 1

    after = {r.pk: r.leased_until for r in OutboxMessage.objects.all()}
    assert after[ids[0]] > before[ids[0]]
    assert after[ids[1]] == before[ids[1]]  # done: untouched
    assert after[ids[2]] == before[ids[2]]  # another claim's token: untouched
    keeper.release([m.id for m in claimed])
    assert keeper.renew() == 0


def test_a_received_but_unstarted_row_is_held_only_for_a_bounded_time(settings):
    settings.OUTBOX = {**settings.OUTBOX, "HOLD_UNSTARTED_SECONDS": 0.2}
    enqueue(2)
    waiting, running = claim(batch_size=10)
    keeper = LeaseKeeper(autostart=False)
    keeper.hold([waiting], started=False)
    keeper.hold([running], started=True)
    assert set(keeper.held()) == {waiting.id, running.id}

    time.sleep(0.3)

    assert set(keeper.held()) == {running.id}  # a message lost with its broker connection is let go


def test_a_deferral_puts_the_row_back_without_spending_an_attempt(outbox_consumer):
    def circuit_open(message: Message) -> None:
        raise Defer("circuit open", delay_seconds=7)

    outbox_consumer(TOPIC, circuit_open)
    [row_id] = enqueue(1)
    for _ in range(3):
        OutboxMessage.objects.filter(pk=row_id).update(available_at=timezone.now())
        [message] = claim(batch_size=10)
        started = timezone.now()
        deliver_envelope(message.to_envelope())

    row = OutboxMessage.objects.get(pk=row_id)
    assert row.status == OutboxStatus.PENDING
    assert row.attempts == 0
    assert row.lease_token is None
    assert timedelta(seconds=6.5) <= row.available_at - started <= timedelta(seconds=7.5)
    assert row.last_error == "deferred: circuit open"


def test_a_consumer_with_its_own_budget_is_not_made_dead_at_the_outbox_limit(outbox_consumer, settings):
    settings.OUTBOX = {**settings.OUTBOX, "MAX_ATTEMPTS": 2}

    def flaky(message: Message) -> None:
        raise RetryLater("insurer 503", min_delay_seconds=0, max_attempts=5)

    outbox_consumer(TOPIC, flaky)
    [row_id] = enqueue(1)
    statuses = []
    for _ in range(5):
        OutboxMessage.objects.filter(pk=row_id).update(available_at=timezone.now())
        [message] = claim(batch_size=10)
        deliver_envelope(message.to_envelope())
        statuses.append(OutboxMessage.objects.get(pk=row_id).status)

    assert statuses == ["pending", "pending", "pending", "pending", "dead"]
    assert OutboxMessage.objects.get(pk=row_id).attempts == 5


def test_message_from_row_is_what_the_relay_hands_out():
    [row_id] = enqueue(1)
    [claimed] = claim(batch_size=1)

    assert Message.from_row(OutboxMessage.objects.get(pk=row_id)) == claimed


def test_the_rows_of_a_received_delivery_task_are_read_from_its_arguments():
    enqueue(2)
    first, second = claim(batch_size=10)

    assert envelopes_of_task("outbox.deliver", (first.to_envelope(),)) == [first]
    assert envelopes_of_task("outbox.deliver_many", ([first.to_envelope(), second.to_envelope()],)) == [
        first,
        second,
    ]
    assert envelopes_of_task("outbox.relay", ()) == []
    assert envelopes_of_task("outbox.deliver", ({"not": "an envelope"},)) == []
