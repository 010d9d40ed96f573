"""Deliveries: Standard Webhooks signatures checked by the library's own `Webhook.verify`, the same
`webhook-id` across retries, 410 disables, retries end with the 3-day window (time-machine), rotation,
per-object order, and a slow endpoint never holding up another (SPEC §10)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.core import mail
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from apps.common.actors import Actor
from apps.outbox.models import OutboxMessage
from apps.outbox.testing import drain
from apps.partners.tests.factories import PartnerFactory
from apps.partners.tests.webhook_helpers import endpoint_for, record
from apps.partners.webhooks import dispatch
from apps.partners.webhooks.contracts import EventType
from apps.partners.webhooks.dispatch import dispatch_forever, dispatch_once
from apps.partners.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from apps.partners.webhooks.receiver import Receiver
from apps.partners.webhooks.services import webhook_endpoint_rotate_secret, webhook_endpoint_update

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _local_receivers(settings):
    settings.WEBHOOKS_ALLOW_LOCAL_HTTP = True


def until_due(endpoint: WebhookEndpoint) -> None:
    """Make the endpoint's backoff and its deliveries' next attempts due now (instead of sleeping)."""
    now = timezone.now()
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(retry_at=now)
    WebhookDelivery.objects.filter(endpoint=endpoint, status="pending").update(next_attempt_at=now)


def test_every_event_type_is_signed_and_verified_by_the_library():
    partner = PartnerFactory()
    with Receiver() as receiver:
        endpoint, secret = endpoint_for(partner.pk, receiver.url)
        receiver.secrets = [secret]
        events = [record(partner.pk, type=t, object_id=str(i)) for i, t in enumerate(EventType.values)]
        assert dispatch_once() == len(EventType.values)
    assert [r.json["type"] for r in receiver.received] == list(EventType.values)
    for request, event in zip(receiver.received, events, strict=True):
        payload = Webhook(secret).verify(request.body, request.headers)  # raises on a bad signature
        assert payload["id"] == event.public_id == request.webhook_id
        assert (payload["position"], payload["sequence"], payload["data"]) == (event.position, 1, event.data)
        assert abs(int(request.headers["webhook-timestamp"]) - time.time()) < 60
    assert WebhookDelivery.objects.filter(endpoint=endpoint, status="delivered").count() == len(EventType.values)


def test_a_tampered_body_or_a_wrong_secret_does_not_verify():
    partner = PartnerFactory()
    with Receiver() as receiver:
        _, secret = endpoint_for(partner.pk, receiver.url)
        record(partner.pk)
        dispatch_once()
    [request] = receiver.received
    from standardwebhooks.webhooks import WebhookVerificationError

    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(request.body.replace(b'"n"', b'"m"'), request.headers)
    other = "whsec_" + "A" * 43 + "="
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(request.body, request.headers)


def test_500_then_200_is_delivered_once_with_the_same_webhook_id():
    partner = PartnerFactory()
    answers = iter([500, 200])
    with Receiver(respond=lambda _r: (next(answers), {}, b"oops")) as receiver:
        endpoint, secret = endpoint_for(partner.pk, receiver.url)
        event = record(partner.pk)
        assert dispatch_once() == 0
        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        assert (delivery.status, delivery.attempts) == ("pending", 1)
        assert delivery.next_attempt_at > timezone.now()
        assert dispatch_once() == 0  # backing off: nothing sent
        until_due(endpoint)
        assert dispatch_once() == 1
        until_due(endpoint)
        assert dispatch_once() == 0  # delivered: never again
    assert [r.webhook_id for r in receiver.received] == [event.public_id, event.public_id]
    assert receiver.received[0].body == receiver.received[1].body
    for r in receiver.received:
        Webhook(secret).verify(r.body, r.headers)
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    attempts = list(WebhookAttempt.objects.filter(endpoint=endpoint).order_by("id"))
    assert [(a.attempt, a.status_code, a.succeeded, a.response_excerpt) for a in attempts] == [
        (1, 500, False, "oops"),
        (2, 200, True, "oops"),
    ]


def test_410_disables_the_endpoint_and_nothing_more_is_sent():
    partner = PartnerFactory()
    with Receiver(respond=lambda _r: (410, {}, b"")) as receiver:
        endpoint, _ = endpoint_for(partner.pk, receiver.url)
        record(partner.pk, object_id="1")
        record(partner.pk, object_id="2")
        dispatch_once()
        endpoint.refresh_from_db()
        assert (endpoint.is_active, endpoint.disabled_reason) == (False, "the endpoint answered 410 Gone")
        record(partner.pk, object_id="3")  # a new event: no delivery for a disabled endpoint
        until_due(endpoint)
        dispatch_once()
    assert len(receiver.received) == 1
    assert list(WebhookDelivery.objects.filter(endpoint=endpoint).values_list("status", flat=True)) == [
        "failed",
        "failed",
    ]
    assert WebhookAttempt.objects.filter(endpoint=endpoint).count() == 1
    assert len(mail.outbox) == 0  # a 410 is the partner's own doing: no e-mail


def test_retries_stop_after_the_window_and_the_partner_is_emailed(time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    partner = PartnerFactory(contact_email="ops@partner.example")
    with Receiver(respond=lambda _r: (503, {}, b"down")) as receiver:
        endpoint, _ = endpoint_for(partner.pk, receiver.url)
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(created_at=timezone.now() - timedelta(days=10))
        record(partner.pk)
        # Every attempt the schedule allows within the window fails...
        for _ in range(40):
            delivery = WebhookDelivery.objects.get(endpoint=endpoint)
            if delivery.status != "pending":
                break
            time_machine.move_to(max(delivery.next_attempt_at, WebhookEndpoint.objects.get(pk=endpoint.pk).retry_at))
            dispatch_once()
        attempts_in_window = len(receiver.received)
        # ...then the delivery has failed, the endpoint is disabled, and nothing more is sent.
        time_machine.shift(timedelta(days=1))
        dispatch_once()
    delivery.refresh_from_db()
    endpoint.refresh_from_db()
    assert delivery.status == "failed"
    assert delivery.last_error.startswith("retry window passed")
    assert 10 <= attempts_in_window == len(receiver.received) == delivery.attempts <= 25
    times = list(WebhookAttempt.objects.filter(endpoint=endpoint).order_by("id").values_list("at", flat=True))
    first, last = times[0], times[-1]
    assert timedelta(hours=60) < last - first <= timedelta(hours=72)
    assert endpoint.is_active is False
    assert endpoint.disabled_reason == "every delivery failed for 72.0 hours"
    # The e-mail goes through the outbox (its consumer sends it after commit).
    assert OutboxMessage.objects.filter(topic="partners.endpoint_disabled").count() == 1
    drain()
    assert [m.to for m in mail.outbox] == [["ops@partner.example"]]
    assert f"endpoint {endpoint.pk} was disabled" in mail.outbox[0].subject


def test_backoff_grows_exponentially_with_jitter_up_to_the_cap(settings):
    delays = [[dispatch.backoff_seconds(n) for _ in range(50)] for n in range(1, 16)]
    for n, values in enumerate(delays, start=1):
        ceiling = min(43_200.0, 10.0 * 2 ** (n - 1))
        assert all(ceiling / 2 <= v <= ceiling for v in values)
        assert len(set(values)) > 1  # jittered
    assert max(delays[-1]) <= 43_200.0


def test_rotated_secret_keeps_the_old_one_verifying_for_24_hours(time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    partner = PartnerFactory()
    with Receiver() as receiver:
        endpoint, old = endpoint_for(partner.pk, receiver.url)
        _, new = webhook_endpoint_rotate_secret(endpoint=endpoint, actor=Actor.system("tests"))
        record(partner.pk, object_id="1")
        dispatch_once()
        time_machine.shift(timedelta(hours=24, seconds=1))
        record(partner.pk, object_id="2")
        dispatch_once()
    during, after = receiver.received
    assert len(during.headers["webhook-signature"].split(" ")) == 2
    # Verify with the library at the time each was sent (its timestamp tolerance is 5 minutes).
    time_machine.shift(timedelta(hours=-24))
    Webhook(old).verify(during.body, during.headers)
    Webhook(new).verify(during.body, during.headers)
    time_machine.shift(timedelta(hours=24))
    assert len(after.headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(after.body, after.headers)
    from standardwebhooks.webhooks import WebhookVerificationError

    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(after.body, after.headers)


def test_one_objects_events_are_delivered_in_order_while_others_proceed():
    partner = PartnerFactory()
    refused_once: set[str] = set()

    def respond(item):
        body = item.json
        if body["object"]["id"] == "A" and body["sequence"] == 1 and "A1" not in refused_once:
            refused_once.add("A1")
            return 400, {}, b"not yet"
        return 200, {}, b""

    with Receiver(respond=respond) as receiver:
        endpoint, _ = endpoint_for(partner.pk, receiver.url)
        record(partner.pk, object_id="A")
        record(partner.pk, object_id="A")
        record(partner.pk, object_id="B")
        record(partner.pk, object_id="A")
        dispatch_once()
        # A#1 was refused (a 4xx: this delivery backs off, the endpoint does not): A#2, A#3 wait, B goes.
        assert [(r.json["object"]["id"], r.json["sequence"]) for r in receiver.received] == [("A", 1), ("B", 1)]
        until_due(endpoint)
        dispatch_once()
    assert [(r.json["object"]["id"], r.json["sequence"]) for r in receiver.received] == [
        ("A", 1),
        ("B", 1),
        ("A", 1),
        ("A", 2),
        ("A", 3),
    ]


def test_disabled_then_reenabled_endpoint_gets_new_events_only():
    partner = PartnerFactory()
    principal_actor = Actor.system("tests")
    from apps.partners.tests.webhook_helpers import principal

    with Receiver() as receiver:
        endpoint, _ = endpoint_for(partner.pk, receiver.url)
        webhook_endpoint_update(
            principal=principal(partner.pk), endpoint=endpoint, is_active=False, actor=principal_actor
        )
        record(partner.pk, object_id="missed")
        webhook_endpoint_update(
            principal=principal(partner.pk), endpoint=endpoint, is_active=True, actor=principal_actor
        )
        record(partner.pk, object_id="new")
        dispatch_once()
    assert [r.json["object"]["id"] for r in receiver.received] == ["new"]


def test_response_is_read_up_to_the_cap(settings):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "RESPONSE_MAX_BYTES": 1000}
    partner = PartnerFactory()
    with Receiver(respond=lambda _r: (200, {}, b"x" * 100_000)) as receiver:
        endpoint, _ = endpoint_for(partner.pk, receiver.url)
        record(partner.pk)
        dispatch_once()
    [attempt] = WebhookAttempt.objects.filter(endpoint=endpoint)
    assert attempt.succeeded
    assert attempt.response_excerpt == "x" * 1000


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_a_slow_endpoint_never_holds_up_another_partners_deliveries(require_postgres):
    released = threading.Event()
    slow_partner, fast_partner = PartnerFactory(), PartnerFactory()

    def slow(_item):
        released.wait(30)
        return 200, {}, b""

    with Receiver(respond=slow) as slow_receiver, Receiver() as fast_receiver:
        endpoint_for(slow_partner.pk, slow_receiver.url)
        endpoint_for(fast_partner.pk, fast_receiver.url)
        record(slow_partner.pk, object_id="s1")
        stop = threading.Event()
        loop = threading.Thread(target=lambda: dispatch_forever(should_stop=stop.is_set, idle_seconds=0.05))
        loop.start()
        try:
            for _ in range(200):  # wait until the slow endpoint's request is being held
                if slow_receiver.count:
                    break
                time.sleep(0.05)
            for i in range(20):
                record(fast_partner.pk, object_id=f"f{i}")
            for _ in range(400):
                if fast_receiver.count == 20:
                    break
                time.sleep(0.05)
            # Every fast delivery arrived while the slow endpoint still held its first request.
            assert (fast_receiver.count, slow_receiver.count, released.is_set()) == (20, 1, False)
        finally:
            released.set()
            stop.set()
            loop.join(30)
    assert WebhookDelivery.objects.filter(status="delivered").count() == 21


def test_the_celery_dispatch_task_returns_after_one_idle_pass(monkeypatch):
    """Beat queues `webhooks.dispatch` every second: a run that finds nothing to sequence, claim or wait for
    must give its worker thread back at once instead of polling for DISPATCH_TASK_SECONDS (the newcomer trial
    of issue 10 found all four worker threads held by idle dispatch runs, queueing the pipeline behind them)."""
    from apps.partners.tasks import webhooks_dispatch

    passes: list[int] = []
    real_claim = dispatch.endpoints_claim

    def counting_claim(**kwargs):
        passes.append(1)
        return real_claim(**kwargs)

    monkeypatch.setattr(dispatch, "endpoints_claim", counting_claim)
    assert webhooks_dispatch() == 0
    assert passes == [1]


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_the_celery_dispatch_task_is_woken_by_commits_not_a_10_ms_poll(require_postgres, monkeypatch):
    """ADR 0052: the task sleeps on the dispatcher's wake-up (NOTIFY, a run finishing, its 0.2 s idle pass) like
    `webhook_dispatch`; it used to run a pass (sequencer + claim) every 10 ms while a run was going."""
    from apps.partners.tasks import webhooks_dispatch

    # Given an endpoint whose receiver holds its request, and the task running
    released = threading.Event()
    slow_partner, fast_partner = PartnerFactory(), PartnerFactory()
    passes: list[float] = []
    real_claim = dispatch.endpoints_claim

    def counting_claim(**kwargs):
        passes.append(time.monotonic())
        return real_claim(**kwargs)

    def held(_item):
        released.wait(30)
        return 200, {}, b""

    monkeypatch.setattr(dispatch, "endpoints_claim", counting_claim)
    with Receiver(respond=held) as slow_receiver, Receiver() as fast:
        endpoint_for(slow_partner.pk, slow_receiver.url)
        endpoint_for(fast_partner.pk, fast.url)
        record(slow_partner.pk, object_id="s1")
        task = threading.Thread(target=webhooks_dispatch)
        task.start()
        try:
            for _ in range(200):
                if slow_receiver.count:
                    break
                time.sleep(0.05)
            assert slow_receiver.count == 1

            # When the run is held for 2 s, and then another partner's event commits
            held_from = time.monotonic()
            time.sleep(2.0)
            held_passes = len([t for t in passes if t >= held_from])
            record(fast_partner.pk, object_id="f1")
            for _ in range(100):
                if fast.count:
                    break
                time.sleep(0.02)

            # Then the held second saw its idle passes (every 0.2 s), not ~200 polls, and the commit still reached
            # the same task's loop at once
            assert held_passes <= 15, held_passes
            assert fast.count == 1
        finally:
            released.set()
            task.join(30)
    assert WebhookDelivery.objects.filter(status="delivered").count() == 2


def test_secrets_are_sealed_at_rest_and_plaintext_rows_are_sealed_by_the_migration():
    """ADR 0042: a row holding a plaintext `whsec_…` (written before migration 0004) is sealed by it, the sealed
    value opens only for its endpoint, and deliveries are still signed with the plaintext."""
    import importlib

    from django.apps import apps as registry

    from apps.partners.webhooks.models import WebhookSecret
    from apps.partners.webhooks.secrets import secret_open

    migration = importlib.import_module("apps.partners.migrations.0004_webhook_secrets_sealed")
    partner = PartnerFactory()
    with Receiver() as receiver:
        endpoint, plaintext = endpoint_for(partner.pk, receiver.url)
        WebhookSecret.objects.filter(endpoint=endpoint).update(secret=plaintext)  # as stored before 0004
        migration.seal_existing(registry, None)
        stored = WebhookSecret.objects.get(endpoint=endpoint).secret
        assert stored.startswith("v1:")
        assert secret_open(stored, endpoint_id=endpoint.pk) == plaintext
        migration.seal_existing(registry, None)  # idempotent: sealed rows are left alone
        assert WebhookSecret.objects.get(endpoint=endpoint).secret == stored
        record(partner.pk)
        assert dispatch_once() == 1
    Webhook(plaintext).verify(receiver.received[0].body, receiver.received[0].headers)


def test_a_secret_that_does_not_open_sends_nothing_and_is_logged(caplog):
    """A wrong WEBHOOK_SECRETS_KEY (or a tampered row): nothing is sent unsigned; the delivery stays pending."""
    from apps.partners.webhooks.models import WebhookSecret

    partner = PartnerFactory()
    with Receiver() as receiver:
        endpoint, _ = endpoint_for(partner.pk, receiver.url)
        other, _ = endpoint_for(partner.pk, receiver.url)
        # Another endpoint's sealed secret does not open here (the endpoint id is the associated data).
        WebhookSecret.objects.filter(endpoint=endpoint).update(secret=WebhookSecret.objects.get(endpoint=other).secret)
        WebhookEndpoint.objects.filter(pk=other.pk).update(is_active=False)
        record(partner.pk)
        with caplog.at_level("ERROR", logger="apps.partners.webhooks.dispatch"):
            assert dispatch_once() == 0
    assert receiver.received == []
    assert WebhookDelivery.objects.get(endpoint=endpoint).status == "pending"
    assert [r.getMessage() for r in caplog.records] == ["webhooks.secret_unreadable"]


def test_one_run_drains_every_due_batch_in_order_checking_the_address_once_per_batch(settings):
    """ADR 0046: a claimed endpoint keeps sending while deliveries are due (batches of DISPATCH_BATCH), resolving
    and checking its host once per batch and connecting to the checked address."""
    from apps.partners.tests.webhook_helpers import resolver_stub

    settings.WEBHOOKS = {**settings.WEBHOOKS, "DISPATCH_BATCH": 2}
    partner = PartnerFactory()
    with Receiver() as receiver, resolver_stub({"receiver.test": ["127.0.0.1"]}) as looked_up:
        endpoint, secret = endpoint_for(partner.pk, f"http://receiver.test:{receiver.port}/hooks")
        events = [record(partner.pk, object_id="same") for _ in range(5)]
        assert looked_up == ["receiver.test"]  # registration
        claims = dispatch.endpoints_claim(limit=4)
        assert [c.endpoint_id for c in claims] == [endpoint.pk]
        assert dispatch.endpoint_run(claims[0]) == 5  # one claim: 3 batches (2, 2, 1)
        assert looked_up == ["receiver.test"] * 4  # + one check per batch, not one per delivery
    assert [r.webhook_id for r in receiver.received] == [e.public_id for e in events]
    assert [r.json["sequence"] for r in receiver.received] == [1, 2, 3, 4, 5]
    assert all(r.headers["host"] == f"receiver.test:{receiver.port}" for r in receiver.received)
    for r in receiver.received:
        Webhook(secret).verify(r.body, r.headers)
    assert list(WebhookAttempt.objects.order_by("id").values_list("event_public_id", "attempt", "succeeded")) == [
        (e.public_id, 1, True) for e in events
    ]
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk, leased_until__isnull=True).exists()  # lease released


def test_a_run_stops_draining_after_its_time_and_releases_the_endpoint(settings, monkeypatch):
    settings.WEBHOOKS = {**settings.WEBHOOKS, "DISPATCH_BATCH": 1}
    monkeypatch.setattr(dispatch, "RUN_DRAIN_SECONDS", 0.0)
    partner = PartnerFactory()
    with Receiver() as receiver:
        endpoint, _ = endpoint_for(partner.pk, receiver.url)
        for n in range(3):
            record(partner.pk, object_id=str(n))
        [claim] = dispatch.endpoints_claim(limit=4)
        assert dispatch.endpoint_run(claim) == 1  # one batch, then the thread is given back
    assert len(receiver.received) == 1
    assert WebhookDelivery.objects.filter(endpoint=endpoint, status="pending").count() == 2
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk, leased_until__isnull=True).exists()


def test_runs_at_once_never_exceed_the_connection_pool_and_the_dispatcher_command_widens_it(settings, monkeypatch):
    """Each run holds a pooled connection; the loop and the recorder hold one more each. 10 pooled connections and
    11 runs made one run's lease release time out, stranding its endpoint (unsent) until the lease expired."""
    from django.db import connection

    settings.WEBHOOKS = {**settings.WEBHOOKS, "DISPATCH_THREADS": 16}
    options = {**connection.settings_dict.get("OPTIONS", {}), "pool": {"max_size": 10, "timeout": 1.5}}
    monkeypatch.setitem(connection.settings_dict, "OPTIONS", options)
    monkeypatch.setattr(type(connection), "_connection_pools", {}, raising=False)
    assert dispatch.run_slots() == 7
    dispatch.pool_reserve(16)
    assert options["pool"] == {"max_size": 19, "timeout": 1.5}
    assert dispatch.run_slots() == 16
    dispatch.pool_reserve(4)  # never shrinks
    assert options["pool"]["max_size"] == 19
    del options["pool"]
    assert dispatch.run_slots() == 16


# --- ADR 0052: the sequencer hands fresh deliveries to lingering runs -----------------------------------------


def _commit_events(partner_id: int, *object_ids: str, data: dict | None = None) -> list:
    """Record events in one transaction without sequencing them (the dispatcher's sequencer does that)."""
    from django.db import transaction

    from apps.partners.webhooks.contracts import EventDraft
    from apps.partners.webhooks.events import partner_events_record

    drafts = [
        EventDraft(
            type=EventType.LEDGER_TOPUP_POSTED,
            partner_id=partner_id,
            employer_id=None,
            object_type="ledger",
            object_id=object_id,
            data=data or {"n": object_id},
        )
        for object_id in object_ids
    ]
    with transaction.atomic():
        return partner_events_record(drafts)


def _start_lingering_run() -> tuple[dispatch.Claim, dispatch.RunHandle, threading.Thread, list[int]]:
    """Sequence what is committed, claim the one endpoint and start its run on a thread as the dispatcher loop
    would (with a `RunHandle`): (claim, handle, the thread, the list its delivered count is appended to)."""
    from apps.partners.webhooks.events import sequence_and_fan_out

    sequence_and_fan_out()
    [claim] = dispatch.endpoints_claim(limit=4)
    handle = dispatch.RunHandle(claim)
    result: list[int] = []
    run = threading.Thread(target=lambda: result.append(dispatch._threaded_run(claim, handle)))
    run.start()
    return claim, handle, run, result


def test_the_sequencer_hands_over_each_objects_first_pending_delivery_with_the_stored_payload(require_postgres):
    """A delivery is handed over only when no earlier delivery of its object to its endpoint is pending, and the
    handed-over event serialises byte for byte like the stored row (the body the partner's signature covers)."""
    from apps.partners.webhooks.events import sequence_and_fan_out
    from apps.partners.webhooks.models import Event

    partner = PartnerFactory()
    held_back, open_ = (endpoint_for(partner.pk, f"http://127.0.0.1:9/{name}")[0] for name in ("held", "open"))
    [a1] = _commit_events(partner.pk, "A")
    first = sequence_and_fan_out()
    assert (first.events, first.endpoint_ids, first.held_endpoint_ids) == (1, {held_back.pk, open_.pk}, set())
    assert [(d.endpoint_id, d.event.public_id) for d in first.fresh] == [
        (held_back.pk, a1.public_id),
        (open_.pk, a1.public_id),
    ]
    # A#1 backs off at one endpoint and was delivered at the other.
    later = timezone.now() + timedelta(minutes=5)
    WebhookDelivery.objects.filter(endpoint=held_back).update(attempts=1, next_attempt_at=later)
    WebhookDelivery.objects.filter(endpoint=open_).update(status="delivered")
    data = {"amount": "1234.50", "name": "Ünïcode ✓", "nested": {"list": [1, 2.5, None, True], "empty": {}}}
    a2, b1, a3 = _commit_events(partner.pk, "A", "B", "A", data=data)
    second = sequence_and_fan_out()
    assert (second.events, second.held_endpoint_ids) == (3, {held_back.pk})
    assert [(d.endpoint_id, d.event.public_id) for d in second.fresh] == [  # id order: position, endpoint
        (open_.pk, a2.public_id),
        (held_back.pk, b1.public_id),  # A#2 and A#3 wait behind the backing-off A#1 there
        (open_.pk, b1.public_id),
        (open_.pk, a3.public_id),
    ]
    assert second.fresh_urls == {held_back.pk: held_back.url, open_.pk: open_.url}
    for handed in second.fresh:
        stored = WebhookDelivery.objects.select_related("event").get(pk=handed.pk)
        assert (handed.endpoint_id, handed.order_key, handed.created_at, handed.attempts) == (
            stored.endpoint_id,
            stored.order_key,
            stored.created_at,
            0,
        )
        assert dispatch.event_body(handed.event) == dispatch.event_body(Event.objects.get(pk=stored.event_id))
    assert sequence_and_fan_out().events == 0


@pytest.mark.django_db(transaction=True)
def test_a_lingering_run_sends_a_handed_over_delivery_without_a_query_or_a_new_claim(require_postgres, monkeypatch):
    from apps.partners.webhooks.events import sequence_and_fan_out

    queries: list[int] = []
    real_due = dispatch._due_deliveries

    def counting_due(endpoint_id, **kwargs):
        queries.append(endpoint_id)
        return real_due(endpoint_id, **kwargs)

    monkeypatch.setattr(dispatch, "_due_deliveries", counting_due)
    monkeypatch.setattr(dispatch, "RUN_DRAIN_SECONDS", 60.0)
    partner = PartnerFactory()
    with Receiver() as receiver:
        endpoint, secret = endpoint_for(partner.pk, receiver.url)
        _commit_events(partner.pk, "1")
        _claim, handle, run, result = _start_lingering_run()
        try:
            for _ in range(400):  # the first delivery is sent and recorded; the run waits for more
                if handle.lingering:
                    break
                time.sleep(0.025)
            assert (handle.lingering, receiver.count, queries) == (True, 1, [endpoint.pk])
            [second] = _commit_events(partner.pk, "2")
            done = sequence_and_fan_out()
            handle.hand_over(list(done.fresh), done.fresh_urls[endpoint.pk])
            for _ in range(400):
                if receiver.count == 2 and handle.lingering:
                    break
                time.sleep(0.025)
        finally:
            handle.release = True
            handle.wake.set()
            run.join(30)
    assert result == [2]
    assert queries == [endpoint.pk]  # the handed-over delivery needed no query
    assert receiver.received[1].webhook_id == second.public_id
    Webhook(secret).verify(receiver.received[1].body, receiver.received[1].headers)
    assert list(WebhookDelivery.objects.order_by("id").values_list("status", "attempts")) == [("delivered", 1)] * 2
    assert WebhookAttempt.objects.filter(succeeded=True).count() == 2
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk, leased_until__isnull=True).exists()  # lease released


@pytest.mark.django_db(transaction=True)
def test_the_dispatcher_loop_delivers_commits_it_is_notified_of_in_order_with_one_claim(require_postgres, monkeypatch):
    """The loop wakes on the commit's NOTIFY (no polling: the idle pass is a minute away), sequences, and hands
    each new delivery to the endpoint's lingering run: one claim serves every event, in per-object order."""
    claims: list[int] = []
    real_claim = dispatch.endpoints_claim

    def counting_claim(**kwargs):
        claimed = real_claim(**kwargs)
        claims.extend(c.endpoint_id for c in claimed)
        return claimed

    monkeypatch.setattr(dispatch, "endpoints_claim", counting_claim)
    monkeypatch.setattr(dispatch, "RUN_DRAIN_SECONDS", 60.0)
    partner = PartnerFactory()
    with Receiver() as receiver:
        endpoint, _ = endpoint_for(partner.pk, receiver.url)
        stop = threading.Event()
        loop = threading.Thread(target=lambda: dispatch_forever(should_stop=stop.is_set, idle_seconds=60.0))
        loop.start()
        try:
            time.sleep(0.5)  # listening
            expected = []
            for n in range(6):
                expected += [(e.object_id, e.sequence) for e in _commit_events(partner.pk, "A", f"b{n}")]
                for _ in range(400):
                    if receiver.count == len(expected):
                        break
                    time.sleep(0.025)
        finally:
            stop.set()
            loop.join(30)
    assert not loop.is_alive()
    assert [(r.json["object"]["id"], r.json["sequence"]) for r in receiver.received] == expected
    assert claims == [endpoint.pk]
    assert WebhookDelivery.objects.filter(status="delivered").count() == 12


def _listening_pids() -> list[int]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN keel_events'"
        )
        return [row[0] for row in cursor.fetchall()]


@pytest.mark.django_db(transaction=True)
def test_the_dispatcher_listens_again_after_its_listening_session_is_terminated(require_postgres):
    """A PostgreSQL restart or a terminated session must not leave the loop deaf until its idle pass: the
    listener thread reopens its connection, LISTENs again, and the next commit wakes the loop."""
    from django.db import connection

    partner = PartnerFactory()
    with Receiver() as receiver:
        endpoint_for(partner.pk, receiver.url)
        stop = threading.Event()
        loop = threading.Thread(target=lambda: dispatch_forever(should_stop=stop.is_set, idle_seconds=60.0))
        loop.start()
        try:
            for _ in range(200):
                if _listening_pids():
                    break
                time.sleep(0.025)
            [first] = _listening_pids()
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_terminate_backend(%s)", [first])
            for _ in range(400):
                if _listening_pids() not in ([], [first]):
                    break
                time.sleep(0.025)
            [second] = _listening_pids()
            [event] = _commit_events(partner.pk, "after")
            for _ in range(400):
                if receiver.count:
                    break
                time.sleep(0.025)
        finally:
            stop.set()
            loop.join(30)
    assert second != first
    assert [r.webhook_id for r in receiver.received] == [event.public_id]


# --- ADR 0059: the dispatcher plans for the values it runs with, not from plans cached on small tables ----------


def _seq_scans() -> dict[str, int]:
    """Sequential scans of the delivery and event tables by this session in the current transaction."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT relname, seq_scan FROM pg_stat_xact_user_tables "
            "WHERE relname IN ('partners_webhookdelivery', 'partners_event')"
        )
        return dict(cursor.fetchall())


def test_foreign_key_checks_and_queries_use_indexes_after_the_tables_grew_past_their_cached_plans(require_postgres):
    """The bench's latency grew round by round (issue 13): each attempt row's foreign-key check
    (`SELECT 1 FROM ONLY partners_webhookdelivery x WHERE id = $1 FOR KEY SHARE`) kept the generic plan
    PostgreSQL cached while the table was a page — a sequential scan — and read the whole table as it grew,
    until the next ANALYZE. Given plans primed on near-empty tables, after the tables grow a dispatch pass
    (sequencer, claim, due query, recording, and their foreign-key checks) scans neither table sequentially."""
    from django.db import connection

    partner = PartnerFactory()
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # FK checks at each statement: the test never commits
        cursor.execute("ANALYZE partners_webhookdelivery, partners_event")  # empty: 0 rows, 0 pages
    with Receiver() as receiver:
        endpoint, _ = endpoint_for(partner.pk, receiver.url)
        for n in range(8):  # > 5 executions of every statement and FK check: PostgreSQL may cache a generic plan
            record(partner.pk, object_id=f"small-{n}")
            assert dispatch_once() == 1
        with connection.cursor() as cursor:  # then the tables grow to ~150 pages each, as in a bench round
            cursor.execute(
                "WITH e AS (INSERT INTO partners_event (public_id, partner_id, type, object_type, object_id, "
                "sequence, data, created_at, position, positioned_at) "
                "SELECT 'evt_grown_' || g, %s, 'ledger.topup_posted', 'grown', g::text, 1, '{}', now(), "
                "1000000 + g, now() FROM generate_series(1, 6000) g RETURNING id) "
                "INSERT INTO partners_webhookdelivery (endpoint_id, event_id, order_key, status, attempts, "
                "next_attempt_at, created_at, finished_at, last_error) "
                "SELECT %s, id, 'grown:' || id, 'delivered', 1, now(), now(), now(), '' FROM e",
                [partner.pk, endpoint.pk],
            )
        last = record(partner.pk, object_id="after-growth")
        before = _seq_scans()
        assert dispatch_once() == 1
        after = _seq_scans()
    assert receiver.received[-1].webhook_id == last.public_id
    assert {table: after[table] - before[table] for table in after} == {
        "partners_webhookdelivery": 0,
        "partners_event": 0,
    }


def test_the_due_query_looks_up_each_rows_backing_off_predecessor_by_index_not_the_whole_backlog(require_postgres):
    """ADR 0059: `_due_deliveries` excluded objects backing off with a `NOT EXISTS` that PostgreSQL turned into an
    anti-join; planned from a 1-row estimate (tables without column statistics) it re-read every pending row of the
    endpoint for each due row — 40,000 index entries for a 200-row backlog. Each due row now probes the
    (endpoint, order_key) index once, and an object backing off still holds its later deliveries back."""
    from django.db import connection

    partner = PartnerFactory()
    endpoint, _ = endpoint_for(partner.pk, "http://127.0.0.1:9/hooks")
    now = timezone.now()
    # index entries this transaction read from the (endpoint, order_key, id) pending index
    read_entries = "SELECT pg_stat_get_xact_tuples_returned('partners_delivery_key_pending'::regclass)"
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE partners_webhookdelivery, partners_event")  # empty: no column statistics
        cursor.execute(  # 5,000 delivered; a backlog of 150 due ones of distinct objects, object 7 backing off first
            "WITH e AS (INSERT INTO partners_event (public_id, partner_id, type, object_type, object_id, sequence, "
            "data, created_at) SELECT 'evt_backlog_' || g, %s, 'ledger.topup_posted', 'o', g::text, 1, '{}', %s "
            "FROM generate_series(-5000, 150) g RETURNING id, object_id) "
            "INSERT INTO partners_webhookdelivery (endpoint_id, event_id, order_key, status, attempts, "
            "next_attempt_at, created_at, last_error) SELECT %s, id, 'o:' || CASE WHEN object_id = '0' THEN '7' "
            "ELSE object_id END, CASE WHEN object_id::int < 0 THEN 'delivered' ELSE 'pending' END, 0, "
            "CASE WHEN object_id = '0' THEN %s ELSE %s END, %s, '' FROM e",
            [partner.pk, now, endpoint.pk, now + timedelta(minutes=5), now - timedelta(seconds=1), now],
        )
        cursor.execute(read_entries)
        [before] = cursor.fetchone()
        due = dispatch._due_deliveries(endpoint.pk, now=now, limit=200)
        cursor.execute(read_entries)
        [after] = cursor.fetchone()
    assert sorted(int(d.event.object_id) for d in due) == [n for n in range(1, 151) if n != 7]
    assert after - before <= 150  # one probe per due row: 0 or 1 entry each (it was ~150 per row)


# --- ADR 0062: the recorder writes every run's all-2xx batches while the runs go on sending --------------------


def _wait_until(condition, what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


@pytest.mark.django_db(transaction=True)
def test_a_run_sends_on_while_its_batches_are_recorded_and_keeps_its_lease_until_they_are(
    require_postgres, monkeypatch
):
    from apps.partners.webhooks.events import sequence_and_fan_out

    monkeypatch.setattr(dispatch, "RUN_DRAIN_SECONDS", 60.0)
    gate = threading.Event()
    recorder = dispatch._Recorder()
    real_flush = recorder.flush
    recorder.flush = lambda taken: (gate.wait(30), real_flush(taken))  # the database is slow to record
    monkeypatch.setattr(dispatch, "_the_recorder", recorder)
    partner = PartnerFactory()
    with Receiver() as receiver:
        endpoint, _ = endpoint_for(partner.pk, receiver.url)
        _commit_events(partner.pk, "1")
        claim, handle, run, result = _start_lingering_run()
        try:
            _wait_until(lambda: receiver.count == 1 and handle.lingering, "the first delivery sent")
            [second] = _commit_events(partner.pk, "2")
            done = sequence_and_fan_out()
            handle.hand_over(list(done.fresh), done.fresh_urls[endpoint.pk])
            _wait_until(lambda: receiver.count == 2, "the second sent while the first is being recorded")
            assert WebhookDelivery.objects.filter(status="pending").count() == 2  # neither recorded yet
            handle.release = True
            handle.wake.set()
            time.sleep(0.3)
            assert run.is_alive()  # waiting for its records before it gives the lease back
            assert WebhookEndpoint.objects.filter(pk=endpoint.pk, lease_token=claim.token).exists()
        finally:
            gate.set()
            run.join(30)
    assert result == [2]
    assert [r.webhook_id for r in receiver.received][1] == second.public_id
    assert list(WebhookDelivery.objects.order_by("id").values_list("status", "attempts")) == [("delivered", 1)] * 2
    assert list(WebhookAttempt.objects.order_by("id").values_list("attempt", "succeeded", "status_code")) == [
        (1, True, 204),
        (1, True, 204),
    ]
    assert WebhookEndpoint.objects.filter(pk=endpoint.pk, leased_until__isnull=True).exists()


def test_one_statement_records_the_batches_of_several_endpoints(require_postgres, django_assert_num_queries):
    from apps.partners.webhooks.events import sequence_and_fan_out

    partner = PartnerFactory()
    with Receiver() as receiver:
        endpoints = [endpoint_for(partner.pk, f"{receiver.url}{n}")[0] for n in range(3)]
        _commit_events(partner.pk, "A", "B")
        fresh = list(sequence_and_fan_out().fresh)
    WebhookEndpoint.objects.filter(pk=endpoints[0].pk).update(consecutive_failures=2, failing_since=timezone.now())
    recorder = dispatch._Recorder(start=False)
    pending = []
    ok = dispatch.sender.SendResult(200, 3, "ok", "")
    for endpoint in endpoints:
        outcomes = [dispatch._Outcome(d, ok, timezone.now()) for d in fresh if d.endpoint_id == endpoint.pk]
        pending.append(recorder.submit(endpoint.pk, outcomes))

    taken = recorder.take(timeout=0)
    with django_assert_num_queries(1):
        recorder.flush(taken)

    assert len(taken) == 3
    assert all(p.done.is_set() and not p.failed for p in pending)
    assert WebhookDelivery.objects.filter(status="delivered", attempts=1).count() == 6
    assert sorted(WebhookAttempt.objects.values_list("endpoint_id", flat=True)) == sorted([e.pk for e in endpoints] * 2)
    assert not WebhookEndpoint.objects.filter(consecutive_failures__gt=0).exists()
    assert not WebhookEndpoint.objects.filter(failing_since__isnull=False).exists()


@pytest.mark.django_db(transaction=True)
def test_a_batch_the_recorder_could_not_write_is_sent_again_with_the_same_webhook_id(require_postgres, monkeypatch):
    """At least once (SPEC §10): a record lost (the database away, or a crash before an async commit reached the
    disk) leaves the delivery pending; the run ends, and the next one sends it again with the same `webhook-id`."""
    from django.db import DatabaseError

    monkeypatch.setattr(dispatch, "RUN_DRAIN_SECONDS", 60.0)
    recorder = dispatch._Recorder()
    monkeypatch.setattr(dispatch, "_the_recorder", recorder)
    real_record = dispatch._record_delivered
    calls: list[int] = []

    def fail_once(batches, **kwargs):
        calls.append(len(batches))
        if len(calls) == 1:
            raise DatabaseError("connection lost")
        return real_record(batches, **kwargs)

    monkeypatch.setattr(dispatch, "_record_delivered", fail_once)
    partner = PartnerFactory()
    with Receiver() as receiver:
        endpoint, _ = endpoint_for(partner.pk, receiver.url)
        [event] = _commit_events(partner.pk, "1")
        _claim, handle, run, _result = _start_lingering_run()
        _wait_until(lambda: receiver.count == 1 and handle.lingering, "the delivery sent")
        handle.release = True
        handle.wake.set()
        run.join(30)
        assert WebhookDelivery.objects.get().status == "pending"  # not recorded: it goes out again
        assert WebhookEndpoint.objects.filter(pk=endpoint.pk, leased_until__isnull=True).exists()
        assert dispatch_once() == 1
    assert [r.webhook_id for r in receiver.received] == [event.public_id] * 2
    assert WebhookDelivery.objects.get().status == "delivered"


# --- ADR 0066: what a failure backs off — the delivery (and its object's later events) or the whole endpoint -----

DELIVERY_FAILURES = [400, 401, 403, 404, 409, 422, 301, 302, 500, 501, 505, 599]
ENDPOINT_DOWN = [429, 502, 503, 504]


def test_the_status_tables_cover_every_class_and_the_endpoint_rule():
    assert set(ENDPOINT_DOWN) == set(dispatch.ENDPOINT_DOWN_STATUSES)
    assert {s // 100 for s in DELIVERY_FAILURES} == {3, 4, 5}
    assert not set(DELIVERY_FAILURES) & dispatch.ENDPOINT_DOWN_STATUSES


@pytest.mark.parametrize("status", DELIVERY_FAILURES)
def test_a_failing_event_holds_back_only_its_own_objects_later_events(status):
    """docs/webhooks.md: the receiver refuses object A's event; B's and C's go out in the same pass, A's second
    event waits behind the first, and the endpoint itself is not backing off."""
    partner = PartnerFactory()
    with Receiver(respond=lambda r: (status if r.json["object"]["id"] == "A" else 200, {}, b"")) as receiver:
        endpoint, _ = endpoint_for(partner.pk, receiver.url)
        a1 = record(partner.pk, object_id="A")
        record(partner.pk, object_id="B")
        record(partner.pk, object_id="A")
        record(partner.pk, object_id="C")
        assert dispatch_once() == 2
    assert [(r.json["object"]["id"], r.webhook_id) for r in receiver.received] == [
        ("A", a1.public_id),
        ("B", receiver.received[1].webhook_id),
        ("C", receiver.received[2].webhook_id),
    ]
    endpoint.refresh_from_db()
    assert (endpoint.consecutive_failures, endpoint.failing_since) == (0, None)
    assert endpoint.retry_at <= timezone.now()
    rows = WebhookDelivery.objects.filter(endpoint=endpoint).order_by("id").values_list("status", "attempts")
    assert list(rows) == [("pending", 1), ("delivered", 1), ("pending", 0), ("delivered", 1)]


@pytest.mark.parametrize("status", [*ENDPOINT_DOWN, None])
def test_an_unavailable_endpoint_backs_off_as_a_whole(status):
    """No connection (None: the receiver is stopped), 429, 502, 503, 504: nothing more is sent this pass and the
    endpoint waits for its `retry_at`."""
    partner = PartnerFactory()
    if status is None:  # a receiver that was stopped: its port refuses connections
        with Receiver() as receiver:
            endpoint, _ = endpoint_for(partner.pk, receiver.url)
        record(partner.pk, object_id="A")
        record(partner.pk, object_id="B")
        assert dispatch_once() == 0
    else:
        with Receiver(respond=lambda _r: (status, {}, b"")) as receiver:
            endpoint, _ = endpoint_for(partner.pk, receiver.url)
            record(partner.pk, object_id="A")
            record(partner.pk, object_id="B")
            assert dispatch_once() == 0
    assert len(receiver.received) == (1 if status is not None else 0)
    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == 1
    assert endpoint.retry_at > timezone.now()
    assert list(
        WebhookDelivery.objects.filter(endpoint=endpoint).order_by("id").values_list("attempts", flat=True)
    ) == [
        1,
        0,
    ]


def test_three_failures_in_a_row_back_off_the_endpoint_whatever_the_status():
    partner = PartnerFactory()
    with Receiver(respond=lambda _r: (500, {}, b"bug")) as receiver:
        endpoint, _ = endpoint_for(partner.pk, receiver.url)
        for object_id in "ABCDE":
            record(partner.pk, object_id=object_id)
        assert dispatch_once() == 0
    assert [r.json["object"]["id"] for r in receiver.received] == ["A", "B", "C"]
    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == 1
    assert endpoint.retry_at > timezone.now()


@pytest.mark.django_db(transaction=True)
def test_a_run_that_lives_on_retries_a_failed_event_before_its_objects_later_ones(require_postgres, monkeypatch):
    """Newcomer trial: with runs living up to a minute, a failed delivery stayed in the run's sent set, so when it
    came due the run skipped it and sent the object's later events first (ACTIVE before RECEIVED). A failed one is
    sent again when due, then the later ones, in order."""
    from apps.partners.webhooks.events import sequence_and_fan_out

    monkeypatch.setattr(dispatch, "RUN_DRAIN_SECONDS", 60.0)
    answers = iter([500])
    partner = PartnerFactory()
    with Receiver(respond=lambda _r: (next(answers, 200), {}, b"")) as receiver:
        endpoint, _ = endpoint_for(partner.pk, receiver.url)
        [first] = _commit_events(partner.pk, "A")
        _claim, handle, run, _result = _start_lingering_run()
        try:
            _wait_until(lambda: receiver.count == 1 and handle.lingering, "the first event sent and refused")
            [second] = _commit_events(partner.pk, "A")
            done = sequence_and_fan_out()
            assert (list(done.fresh), done.held_endpoint_ids) == ([], {endpoint.pk})  # queued behind the first
            handle.ask_query()  # what the loop does for a held delivery
            time.sleep(0.3)
            assert receiver.count == 1  # the first is backing off: the second waits
            WebhookDelivery.objects.filter(event__public_id=first.public_id).update(next_attempt_at=timezone.now())
            handle.ask_query()  # what the idle sweep does for an endpoint with a retry due
            _wait_until(lambda: receiver.count == 3, "the retry, then the second")
        finally:
            handle.release = True
            handle.wake.set()
            run.join(30)
    assert [r.webhook_id for r in receiver.received] == [first.public_id, first.public_id, second.public_id]
    assert set(WebhookDelivery.objects.values_list("status", flat=True)) == {"delivered"}


@pytest.mark.django_db(transaction=True)
def test_failures_in_a_row_count_across_a_runs_batches(require_postgres, monkeypatch):
    """Handed-over deliveries arrive one batch each: the third failure in a row still backs off the endpoint."""
    from apps.partners.webhooks.events import sequence_and_fan_out

    monkeypatch.setattr(dispatch, "RUN_DRAIN_SECONDS", 60.0)
    partner = PartnerFactory()
    with Receiver(respond=lambda _r: (500, {}, b"bug")) as receiver:
        endpoint, _ = endpoint_for(partner.pk, receiver.url)
        _commit_events(partner.pk, "A")
        _claim, handle, run, result = _start_lingering_run()
        try:
            _wait_until(lambda: receiver.count == 1 and handle.lingering, "A refused")
            for n, object_id in enumerate("BC", start=2):
                _commit_events(partner.pk, object_id)
                done = sequence_and_fan_out()
                handle.hand_over(list(done.fresh), done.fresh_urls[endpoint.pk])
                _wait_until(lambda n=n: receiver.count == n, f"{object_id} refused")
            run.join(10)
            assert not run.is_alive()  # the third failure in a row ended the run
        finally:
            handle.release = True
            handle.wake.set()
            run.join(30)
    assert result == [0]
    endpoint.refresh_from_db()
    assert endpoint.consecutive_failures == 1
    assert endpoint.retry_at > timezone.now()
