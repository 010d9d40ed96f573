"""Recording events: same transaction as the change, per-object sequences under concurrency, commit-order
positions with concurrent sequencers, retention (SPEC §10, ADR 0030)."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.outbox.services import OutboxError
from apps.partners.tests.factories import PartnerFactory
from apps.partners.tests.webhook_helpers import endpoint_for, record, resolver_stub
from apps.partners.webhooks.contracts import EventDraft
from apps.partners.webhooks.dispatch import dispatch_once
from apps.partners.webhooks.events import UnknownEventType, events_sequence, partner_events_record
from apps.partners.webhooks.models import Event, EventSequence, WebhookAttempt, WebhookDelivery, WebhookSecret
from apps.partners.webhooks.receiver import Receiver
from apps.partners.webhooks.services import webhooks_retention

pytestmark = pytest.mark.django_db
PUBLIC = {"hooks.example.com": ["93.184.216.34"]}


def draft(partner_id: int, object_id: str = "1", type: str = "ledger.topup_posted") -> EventDraft:
    return EventDraft(type=type, partner_id=partner_id, employer_id=None, object_type="x", object_id=object_id)


def test_events_roll_back_with_the_change_that_recorded_them():
    partner = PartnerFactory()
    with pytest.raises(RuntimeError), transaction.atomic():
        partner_events_record([draft(partner.pk)])
        raise RuntimeError("the change failed")
    assert not Event.objects.exists()
    assert not EventSequence.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_recording_outside_a_transaction_is_refused():
    partner = PartnerFactory()
    with pytest.raises(OutboxError):
        partner_events_record([draft(partner.pk)])
    assert not Event.objects.exists()


def test_recording_an_unknown_type_is_refused():
    partner = PartnerFactory()
    with pytest.raises(UnknownEventType), transaction.atomic():
        partner_events_record([draft(partner.pk, type="ledger.nope")])
    assert not Event.objects.exists()


def test_one_call_numbers_each_objects_events_in_order():
    partner = PartnerFactory()
    with transaction.atomic():
        partner_events_record([draft(partner.pk, "a"), draft(partner.pk, "b"), draft(partner.pk, "a")])
    with transaction.atomic():
        partner_events_record([draft(partner.pk, "a")])
    assert list(Event.objects.order_by("id").values_list("object_id", "sequence")) == [
        ("a", 1),
        ("b", 1),
        ("a", 2),
        ("a", 3),
    ]
    assert events_sequence() == 4
    assert list(Event.objects.order_by("id").values_list("position", flat=True)) == [1, 2, 3, 4]
    assert events_sequence() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_concurrent_recorders_and_sequencers_keep_sequences_and_positions_gapless(require_postgres):
    partner = PartnerFactory()
    errors: list[BaseException] = []
    stop = threading.Event()

    def recorder(n: int) -> None:
        try:
            for i in range(25):
                with transaction.atomic():
                    partner_events_record([draft(partner.pk, object_id=f"obj-{i % 3}")])
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def sequencer() -> None:
        try:
            while not stop.is_set():
                events_sequence(limit=7)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    sequencers = [threading.Thread(target=sequencer) for _ in range(2)]
    recorders = [threading.Thread(target=recorder, args=(n,)) for n in range(4)]
    for t in sequencers + recorders:
        t.start()
    for t in recorders:
        t.join(60)
    stop.set()
    for t in sequencers:
        t.join(60)
    events_sequence()
    assert errors == []
    rows = list(Event.objects.order_by("position").values_list("object_id", "sequence", "position", "id"))
    assert [r[2] for r in rows] == list(range(1, 101))
    for obj in ("obj-0", "obj-1", "obj-2"):
        seqs = [r[1] for r in rows if r[0] == obj]
        assert seqs == list(range(1, len(seqs) + 1))  # in position order, each object's sequence is 1, 2, …
    assert sum(1 for _ in rows) == 100


def test_retention_deletes_what_is_older_than_30_days_only(settings):
    settings.WEBHOOKS_ALLOW_LOCAL_HTTP = True
    partner = PartnerFactory()
    with Receiver() as receiver:
        endpoint_for(partner.pk, receiver.url)
        old, new = record(partner.pk, object_id="old"), record(partner.pk, object_id="new")
        dispatch_once()
    long_ago = timezone.now() - timedelta(days=31)
    Event.objects.filter(pk=old.pk).update(created_at=long_ago)
    WebhookAttempt.objects.filter(event_public_id=old.public_id).update(at=long_ago)
    assert webhooks_retention() == {"attempts": 1, "events": 1, "deliveries": 1, "sequences": 0, "secrets": 0}
    assert list(Event.objects.values_list("public_id", flat=True)) == [new.public_id]
    assert list(WebhookDelivery.objects.values_list("event_id", flat=True)) == [new.pk]
    assert list(WebhookAttempt.objects.values_list("event_public_id", flat=True)) == [new.public_id]
    # The sequence counters stay: the objects spoke within SEQUENCE_RETENTION_DAYS.
    assert sorted(EventSequence.objects.values_list("object_id", "last")) == [("new", 1), ("old", 1)]
    settings.WEBHOOKS = {**settings.WEBHOOKS, "RETENTION_DAYS": 0}
    assert webhooks_retention() == {"attempts": 1, "events": 1, "deliveries": 1, "sequences": 0, "secrets": 0}
    assert not Event.objects.exists()
    assert not WebhookAttempt.objects.exists()


def test_retention_keeps_pending_deliveries_and_their_events():
    partner = PartnerFactory()
    with resolver_stub(PUBLIC):
        endpoint_for(partner.pk, "https://hooks.example.com/in")
    event = record(partner.pk, object_id="pending")
    Event.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(days=31))
    assert webhooks_retention()["events"] == 0
    assert list(WebhookDelivery.objects.values_list("event_id", "status")) == [(event.pk, "pending")]


def test_retention_deletes_silent_objects_sequences_in_bounded_batches(settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "SEQUENCE_RETENTION_DAYS": 90}
    partner = PartnerFactory()
    for n in range(5):
        record(partner.pk, object_id=f"silent-{n}")
    kept = record(partner.pk, object_id="has-an-event")
    record(partner.pk, object_id="recent")
    year_ago = timezone.now() - timedelta(days=91)
    EventSequence.objects.exclude(object_id="recent").update(updated_at=year_ago)
    Event.objects.exclude(pk=kept.pk).delete()  # only "has-an-event" still has an event (a pending delivery)
    assert webhooks_retention(batch_size=2, max_batches=2)["sequences"] == 4  # bounded: 2 batches of 2
    assert EventSequence.objects.filter(object_id__startswith="silent-").count() == 1
    assert webhooks_retention(batch_size=2)["sequences"] == 1
    assert sorted(EventSequence.objects.values_list("object_id", flat=True)) == ["has-an-event", "recent"]
    # An object whose counter went starts again at 1; "recent" continues.
    assert record(partner.pk, object_id="silent-0").sequence == 1
    assert record(partner.pk, object_id="recent").sequence == 2


def test_retention_never_uses_a_sequence_retention_below_the_event_retention(settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "SEQUENCE_RETENTION_DAYS": 1}
    partner = PartnerFactory()
    record(partner.pk, object_id="a")
    Event.objects.all().delete()
    EventSequence.objects.update(updated_at=timezone.now() - timedelta(days=29))
    assert webhooks_retention()["sequences"] == 0
    EventSequence.objects.update(updated_at=timezone.now() - timedelta(days=31))
    assert webhooks_retention()["sequences"] == 1


def test_retention_deletes_secrets_expired_longer_than_the_retention():
    partner = PartnerFactory()
    with resolver_stub(PUBLIC):
        endpoint, _ = endpoint_for(partner.pk, "https://hooks.example.com/in")
    old = WebhookSecret.objects.get(endpoint=endpoint)
    WebhookSecret.objects.filter(pk=old.pk).update(expires_at=timezone.now() - timedelta(days=31))
    recent = WebhookSecret.objects.create(
        endpoint=endpoint, secret=old.secret, expires_at=timezone.now() - timedelta(days=1)
    )
    current = WebhookSecret.objects.create(endpoint=endpoint, secret=old.secret, expires_at=None)
    assert webhooks_retention()["secrets"] == 1
    assert sorted(WebhookSecret.objects.values_list("pk", flat=True)) == sorted([recent.pk, current.pk])


def test_beat_runs_retention_hourly_and_the_job_run_records_rows_per_table(settings):
    from apps.audit.models import JobRunEvent
    from apps.partners.tasks import webhooks_retention as task

    assert settings.CELERY_BEAT_SCHEDULE["webhooks-retention"] == {
        "task": "webhooks.retention",
        "schedule": 3600.0,
        "options": {"queue": "webhooks"},
    }
    partner = PartnerFactory()
    record(partner.pk, object_id="gone")
    Event.objects.update(created_at=timezone.now() - timedelta(days=31))
    assert task() == 1
    end = JobRunEvent.objects.get(job="webhooks.retention", phase="end")
    assert end.counts == {"attempts": 0, "events": 1, "deliveries": 0, "sequences": 0, "secrets": 0}
    assert not Event.objects.exists()


def test_the_sequencers_fan_out_follows_endpoint_wants_exactly():
    """On PostgreSQL the fan-out is SQL (`_SEQUENCE_SQL`, ADR 0052), elsewhere `endpoint_wants` in Python: the two
    must create the same deliveries — partner, subscribed type, employer binding, active endpoints only."""
    from apps.employers.tests.factories import EmployerFactory
    from apps.partners.webhooks.contracts import EventType
    from apps.partners.webhooks.events import endpoint_wants
    from apps.partners.webhooks.models import WebhookEndpoint

    # Given endpoints of two partners with every kind of subscription and binding, one of them disabled
    mine, theirs = PartnerFactory(), PartnerFactory()
    e1, e2, e3 = (EmployerFactory(partner=mine) for _ in range(3))
    topup, low = EventType.LEDGER_TOPUP_POSTED, EventType.LEDGER_LOW_BALANCE
    with resolver_stub(PUBLIC):
        endpoints = [
            endpoint_for(mine.pk, "https://hooks.example.com/all")[0],
            endpoint_for(mine.pk, "https://hooks.example.com/e1", types=[topup], employer_ids=(e1.pk,))[0],
            endpoint_for(mine.pk, "https://hooks.example.com/e12", types=[topup, low], employer_ids=(e1.pk, e2.pk))[0],
            endpoint_for(theirs.pk, "https://hooks.example.com/theirs")[0],
            endpoint_for(mine.pk, "https://hooks.example.com/off")[0],
        ]
    WebhookEndpoint.objects.filter(pk=endpoints[-1].pk).update(is_active=False)

    # When events of each kind commit together and one sequencer pass fans them out
    kinds = [(mine, topup, e1), (mine, topup, e2), (mine, topup, e3), (mine, topup, None), (mine, low, e2)]
    kinds += [(mine, EventType.LOAN_APPLICATION_DECIDED, None), (theirs, topup, None)]
    drafts = [
        EventDraft(type=t, partner_id=p.pk, employer_id=e.pk if e else None, object_type="x", object_id=str(i))
        for i, (p, t, e) in enumerate(kinds)
    ]
    with transaction.atomic():
        events = partner_events_record(drafts)
    assert events_sequence() == len(kinds)

    # Then the deliveries are exactly the pairs `endpoint_wants` admits among the active endpoints
    active = list(WebhookEndpoint.objects.filter(pk__in=[ep.pk for ep in endpoints], is_active=True))
    expected = {(ep.pk, ev.pk) for ep in active for ev in events if endpoint_wants(ep, ev)}
    assert set(WebhookDelivery.objects.values_list("endpoint_id", "event_id")) == expected
    # all: my 6; e1: topup e1 and employer-less topup; e12: topup e1, e2, employer-less + low e2; theirs: 1
    assert len(expected) == 13
