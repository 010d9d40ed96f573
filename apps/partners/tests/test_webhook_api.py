"""`/api/v1/webhook-endpoints` and `/api/v1/events` through the real API: CRUD, secret shown once, scopes,
tenancy (404 across partners and employers), commit-order cursor, redelivery (SPEC §2, §10)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction

from apps.common.secretbox import SealedValueError
from apps.common.testing import row_counts
from apps.employers.tests.factories import EmployerFactory
from apps.partners.models import Scope
from apps.partners.tests.factories import PartnerFactory
from apps.partners.tests.webhook_helpers import record, resolver_stub
from apps.partners.webhooks.contracts import EventDraft, EventType
from apps.partners.webhooks.dispatch import dispatch_once
from apps.partners.webhooks.events import events_sequence, partner_events_record
from apps.partners.webhooks.models import Event, WebhookDelivery, WebhookEndpoint, WebhookSecret
from apps.partners.webhooks.receiver import Receiver
from apps.partners.webhooks.secrets import secret_open

pytestmark = pytest.mark.django_db

PUBLIC = {"hooks.partner.example": ["93.184.215.14"]}
URL = "https://hooks.partner.example/in"


@pytest.fixture(autouse=True)
def _dns():
    with resolver_stub(PUBLIC):
        yield


def create(client, **body):
    body = {"url": URL, "event_types": ["ledger.topup_posted"], **body}
    return client.post("/api/v1/webhook-endpoints", body)


def test_endpoint_crud_and_the_secret_is_shown_once(make_key):
    partner = PartnerFactory()
    client = make_key(partner=partner, all_employers=True)
    response = create(client, description="ops", event_types=["ledger.topup_posted", "endorsement.active"])
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["secret"].startswith("whsec_")
    stored = WebhookSecret.objects.get(endpoint_id=body["id"]).secret
    # Sealed at rest (ADR 0042): the plaintext is nowhere in the row, and it opens only for its own endpoint.
    assert stored.startswith("v1:")
    assert body["secret"] not in stored
    assert secret_open(stored, endpoint_id=body["id"]) == body["secret"]
    with pytest.raises(SealedValueError):
        secret_open(stored, endpoint_id=body["id"] + 1)
    assert (body["url"], body["event_types"], body["employers"], body["is_active"]) == (
        URL,
        ["endorsement.active", "ledger.topup_posted"],
        None,
        True,
    )
    detail = client.get(f"/api/v1/webhook-endpoints/{body['id']}").json()
    assert "secret" not in detail
    listed = client.get("/api/v1/webhook-endpoints").json()["results"]
    assert [e["id"] for e in listed] == [body["id"]]
    assert all("secret" not in e for e in listed)

    patched = client.patch(f"/api/v1/webhook-endpoints/{body['id']}", {"event_types": ["ledger.low_balance"]})
    assert patched.status_code == 200
    assert patched.json()["event_types"] == ["ledger.low_balance"]
    assert patched.json()["updated_at"] > body["updated_at"]  # a change stamps updated_at (queryset updates)
    disabled = client.patch(f"/api/v1/webhook-endpoints/{body['id']}", {"is_active": False}).json()
    assert (disabled["is_active"], disabled["disabled_reason"]) == (False, "disabled by the partner")
    assert client.patch(f"/api/v1/webhook-endpoints/{body['id']}", {"is_active": True}).json()["is_active"] is True

    rotated = client.post(f"/api/v1/webhook-endpoints/{body['id']}/rotate-secret")
    assert rotated.status_code == 200
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != body["secret"]
    assert WebhookSecret.objects.filter(endpoint_id=body["id"], expires_at__isnull=False).count() == 1

    assert client.delete(f"/api/v1/webhook-endpoints/{body['id']}").status_code == 204
    assert not WebhookEndpoint.objects.exists()
    assert client.get(f"/api/v1/webhook-endpoints/{body['id']}").status_code == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://hooks.partner.example/in"}, "url"),
        ({"url": "https://169.254.169.254/latest"}, "url"),
        ({"url": "https://10.0.0.1/"}, "url"),
        ({"url": "x" * 2001}, "url"),
        ({"event_types": []}, "event_types"),
        ({"event_types": ["endorsement.unknown"]}, "event_types"),
        ({"event_types": "ledger.topup_posted"}, "event_types"),
        ({"description": "bad\x00text"}, "description"),
        ({"description": "x" * 501}, "description"),
    ],
)
def test_bad_input_is_a_422_naming_the_field_and_nothing_is_written(make_key, body, field):
    client = make_key(partner=PartnerFactory(), all_employers=True)
    response = create(client, **body)
    assert response.status_code == 422, response.content
    pointers = {e["pointer"] for e in response.json()["errors"]}
    assert pointers in ({f"/{field}"}, {f"/{field}/0"})
    assert not WebhookEndpoint.objects.exists()


def test_event_types_need_the_keys_read_scope(make_key):
    client = make_key(partner=PartnerFactory(), all_employers=True, scopes=[Scope.WEBHOOKS_WRITE, Scope.LEDGER_READ])
    response = create(client, event_types=["ledger.topup_posted", "loan_application.decided"])
    assert response.status_code == 422
    assert "loan_application.decided" in response.json()["errors"][0]["detail"]
    assert create(client).status_code == 201


def test_scopes_webhooks_read_and_write(make_key):
    partner = PartnerFactory()
    reader = make_key(partner=partner, all_employers=True, scopes=[Scope.WEBHOOKS_READ, Scope.LEDGER_READ])
    assert create(reader).status_code == 403
    assert reader.get("/api/v1/webhook-endpoints").status_code == 200
    writer = make_key(partner=partner, all_employers=True, scopes=[Scope.WEBHOOKS_WRITE, Scope.LEDGER_READ])
    assert writer.get("/api/v1/webhook-endpoints").status_code == 403
    assert create(writer).status_code == 201


def test_a_partner_never_sees_another_partners_endpoints_events_or_attempts(make_key, settings):
    mine, theirs = PartnerFactory(), PartnerFactory()
    me = make_key(partner=mine, all_employers=True)
    them = make_key(partner=theirs, all_employers=True)
    endpoint_id = create(them).json()["id"]
    event = record(theirs.pk)
    paths_get = [
        f"/api/v1/webhook-endpoints/{endpoint_id}",
        f"/api/v1/webhook-endpoints/{endpoint_id}/attempts",
        f"/api/v1/events/{event.public_id}",
    ]
    for path in paths_get:
        assert me.get(path).status_code == 404, path
        assert them.get(path).status_code == 200, path
    assert me.patch(f"/api/v1/webhook-endpoints/{endpoint_id}", {"description": "x"}).status_code == 404
    assert me.post(f"/api/v1/webhook-endpoints/{endpoint_id}/rotate-secret").status_code == 404
    assert me.post(f"/api/v1/events/{event.public_id}/redeliver").status_code == 404
    assert me.delete(f"/api/v1/webhook-endpoints/{endpoint_id}").status_code == 404
    assert me.get("/api/v1/webhook-endpoints").json()["results"] == []
    assert me.get("/api/v1/events").json()["results"] == []
    assert WebhookEndpoint.objects.get(pk=endpoint_id).description == ""
    assert WebhookDelivery.objects.filter(event=event).count() == 1  # nothing redelivered


def test_employer_bound_keys_see_and_receive_only_their_employers_events(make_key, settings):
    settings.WEBHOOKS_ALLOW_LOCAL_HTTP = True
    partner = PartnerFactory()
    a, b = EmployerFactory(partner=partner), EmployerFactory(partner=partner)
    key_a = make_key(partner=partner, employers=[a])
    platform = make_key(partner=partner, all_employers=True)
    with Receiver() as receiver:
        response = key_a.post(
            "/api/v1/webhook-endpoints", {"url": receiver.url, "event_types": ["ledger.topup_posted"]}
        )
        assert response.json()["employers"] == [a.pk]
        ev_a = record(partner.pk, employer_id=a.pk, object_id="a")
        ev_b = record(partner.pk, employer_id=b.pk, object_id="b")
        dispatch_once()
    assert [r.webhook_id for r in receiver.received] == [ev_a.public_id]
    assert [e["id"] for e in key_a.get("/api/v1/events").json()["results"]] == [ev_a.public_id]
    assert key_a.get(f"/api/v1/events/{ev_b.public_id}").status_code == 404
    assert [e["id"] for e in platform.get("/api/v1/events").json()["results"]] == [ev_a.public_id, ev_b.public_id]


def test_each_event_type_needs_the_read_scope_of_its_object(make_key):
    partner = PartnerFactory()
    events = {t: record(partner.pk, type=t, object_id=t) for t in EventType.values}
    for scope, prefix in [
        (Scope.ENDORSEMENTS_READ, ("endorsement.", "endorsement_batch.")),
        (Scope.LEDGER_READ, ("ledger.",)),
        (Scope.LOANS_READ, ("loan_application.",)),
        (Scope.RECONCILIATION_READ, ("reconciliation.",)),
    ]:
        client = make_key(partner=partner, all_employers=True, scopes=[scope])
        seen = [e["type"] for e in client.get("/api/v1/events?limit=500").json()["results"]]
        assert seen == [t for t in EventType.values if t.startswith(prefix)], scope
        other = next(e for t, e in events.items() if not t.startswith(prefix))
        assert client.get(f"/api/v1/events/{other.public_id}").status_code == 404


def test_events_page_by_position_with_filters(make_key):
    partner = PartnerFactory()
    client = make_key(partner=partner, all_employers=True)
    made = [record(partner.pk, object_id=str(i % 2)) for i in range(5)]
    first = client.get("/api/v1/events?limit=2").json()
    assert [e["id"] for e in first["results"]] == [e.public_id for e in made[:2]]
    second = client.get(first["next"]).json()
    assert [e["id"] for e in second["results"]] == [e.public_id for e in made[2:4]]
    after = client.get(f"/api/v1/events?after={made[2].position}").json()["results"]
    assert [e["id"] for e in after] == [e.public_id for e in made[3:]]
    by_object = client.get("/api/v1/events?object_id=1").json()["results"]
    assert [(e["object"]["id"], e["sequence"]) for e in by_object] == [("1", 1), ("1", 2)]
    assert client.get("/api/v1/events?type=ledger.low_balance").json()["results"] == []
    assert client.get("/api/v1/events?type=nope").status_code in (400, 422)
    detail = client.get(f"/api/v1/events/{made[0].public_id}").json()
    assert detail == {
        "id": made[0].public_id,
        "type": "ledger.topup_posted",
        "timestamp": detail["timestamp"],
        "position": made[0].position,
        "sequence": 1,
        "object": {"type": "ledger", "id": "0"},
        "employer": None,
        "data": {"n": "0"},
    }


def test_redeliver_sends_the_same_webhook_id_again(make_key, settings):
    settings.WEBHOOKS_ALLOW_LOCAL_HTTP = True
    partner = PartnerFactory()
    client = make_key(partner=partner, all_employers=True)
    with Receiver() as receiver:
        create(client, url=receiver.url)
        event = record(partner.pk)
        dispatch_once()
        response = client.post(f"/api/v1/events/{event.public_id}/redeliver")
        assert (response.status_code, response.json()) == (202, {"queued": 1})
        dispatch_once()
    assert [r.webhook_id for r in receiver.received] == [event.public_id, event.public_id]


def test_attempts_are_listed_for_the_partner(make_key, settings):
    settings.WEBHOOKS_ALLOW_LOCAL_HTTP = True
    partner = PartnerFactory()
    client = make_key(partner=partner, all_employers=True)
    with Receiver(respond=lambda _r: (202, {}, b"thanks")) as receiver:
        endpoint_id = create(client, url=receiver.url).json()["id"]
        event = record(partner.pk)
        dispatch_once()
    [attempt] = client.get(f"/api/v1/webhook-endpoints/{endpoint_id}/attempts").json()["results"]
    assert {
        k: attempt[k]
        for k in ("event", "event_type", "attempt", "status_code", "succeeded", "response_excerpt", "error")
    } == {
        "event": event.public_id,
        "event_type": "ledger.topup_posted",
        "attempt": 1,
        "status_code": 202,
        "succeeded": True,
        "response_excerpt": "thanks",
        "error": "",
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_a_reader_never_misses_an_event_that_commits_late_with_a_smaller_id(make_key, require_postgres):
    partner = PartnerFactory()
    client = make_key(partner=partner, all_employers=True)
    inserted, release, done = threading.Event(), threading.Event(), threading.Event()

    def slow_writer():
        try:
            with transaction.atomic():
                partner_events_record(
                    [
                        EventDraft(
                            type="ledger.topup_posted",
                            partner_id=partner.pk,
                            employer_id=None,
                            object_type="x",
                            object_id="late",
                        )
                    ]
                )
                inserted.set()
                release.wait(20)
        finally:
            connection.close()
            done.set()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert inserted.wait(20)
    # A later transaction commits first, and is positioned and read.
    early = record(partner.pk, object_id="early")
    seen = client.get("/api/v1/events").json()["results"]
    assert [e["id"] for e in seen] == [early.public_id]
    last_position = seen[-1]["position"]
    # The first transaction commits now: its event has the smaller id but gets the next position.
    release.set()
    assert done.wait(20)
    writer.join()
    events_sequence()
    late = Event.objects.get(object_id="late")
    assert late.id < early.id
    assert late.position > last_position
    resumed = client.get(f"/api/v1/events?after={last_position}").json()["results"]
    assert [e["id"] for e in resumed] == [late.public_id]


def test_a_replayed_create_answers_without_the_secret_and_no_record_holds_it(make_key):
    """The secret is shown once (ADR 0042): the Idempotency-Key record stores `secret: null`, so a replay answers
    the same endpoint without it and the database never holds the plaintext (found by a newcomer trial)."""
    from apps.common.models import IdempotencyRecord

    partner = PartnerFactory()
    client = make_key(partner=partner, all_employers=True)
    body = {"url": URL, "event_types": ["ledger.topup_posted"]}
    first = client.post("/api/v1/webhook-endpoints", body, HTTP_IDEMPOTENCY_KEY="create-once")
    again = client.post("/api/v1/webhook-endpoints", body, HTTP_IDEMPOTENCY_KEY="create-once")
    assert first.status_code == again.status_code == 201
    assert first.json()["secret"].startswith("whsec_")
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == {**first.json(), "secret": None}
    assert WebhookEndpoint.objects.filter(partner=partner).count() == 1
    stored = IdempotencyRecord.objects.get(key="create-once").response_body
    assert "whsec_" not in stored
    assert first.json()["secret"] not in stored


@pytest.mark.parametrize("endpoint", ["none", "other_type", "disabled", "other_employer"])
def test_redeliver_with_no_active_subscribed_endpoint_is_409_and_writes_nothing(make_key, endpoint):
    """ADR 0064: a redelivery that would go nowhere is a conflict naming why, not 202 `{"queued": 0}`."""
    partner = PartnerFactory()
    a, b = EmployerFactory(partner=partner), EmployerFactory(partner=partner)
    client = make_key(partner=partner, all_employers=True)
    if endpoint == "other_type":
        create(client, event_types=["endorsement.active"])
    elif endpoint == "disabled":
        endpoint_id = create(client).json()["id"]
        assert client.patch(f"/api/v1/webhook-endpoints/{endpoint_id}", {"is_active": False}).status_code == 200
    elif endpoint == "other_employer":
        create(make_key(partner=partner, employers=[b]))
    event = record(partner.pk, employer_id=a.pk)
    before = row_counts()

    response = client.post(f"/api/v1/events/{event.public_id}/redeliver")

    assert response.status_code == 409, response.content
    assert response["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["type"] == "https://keel.example/problems/no-subscribed-endpoint"
    assert body["detail"].startswith("No active webhook endpoint of this caller receives `ledger.topup_posted`")
    assert row_counts() == before


def test_redeliver_of_an_event_already_pending_queues_nothing_more_and_is_202(make_key):
    partner = PartnerFactory()
    client = make_key(partner=partner, all_employers=True)
    create(client)
    event = record(partner.pk)  # its delivery is pending: nothing has dispatched it
    assert WebhookDelivery.objects.filter(event=event).count() == 1

    response = client.post(f"/api/v1/events/{event.public_id}/redeliver")

    assert (response.status_code, response.json()) == (202, {"queued": 0})
    assert WebhookDelivery.objects.filter(event=event).count() == 1


def test_endpoints_and_attempts_filter_on_exactly_true_or_false(make_key, settings):
    settings.WEBHOOKS_ALLOW_LOCAL_HTTP = True
    partner = PartnerFactory()
    client = make_key(partner=partner, all_employers=True)
    with Receiver(respond=lambda r: (500 if b"fail" in r.body else 200, {}, b"")) as receiver:
        active = create(client, url=receiver.url).json()["id"]
        disabled = create(client, url=receiver.url, event_types=["endorsement.active"]).json()["id"]
        client.patch(f"/api/v1/webhook-endpoints/{disabled}", {"is_active": False})
        record(partner.pk, object_id="ok", data={"n": "ok"})
        record(partner.pk, object_id="fail", data={"n": "fail"})
        dispatch_once()

    def ids(url):
        response = client.get(url)
        assert response.status_code == 200, response.content
        return [row["id"] for row in response.json()["results"]]

    assert ids("/api/v1/webhook-endpoints?is_active=true") == [active]
    assert ids("/api/v1/webhook-endpoints?is_active=false") == [disabled]
    assert len(ids("/api/v1/webhook-endpoints")) == 2
    attempts = f"/api/v1/webhook-endpoints/{active}/attempts"
    succeeded = client.get(f"{attempts}?succeeded=true").json()["results"]
    failed = client.get(f"{attempts}?succeeded=false").json()["results"]
    assert [(a["succeeded"], a["status_code"]) for a in succeeded] == [(True, 200)]
    assert [(a["succeeded"], a["status_code"]) for a in failed] == [(False, 500)]
    assert client.get(f"{attempts}?succeeded=maybe").status_code == 422
