"""Partner events from their real producers, end to end: API → services (events in the same transaction) →
pipeline through the outbox → sequencer → dispatcher →
a local receiver verifying with the Standard Webhooks library (SPEC §6, §7, §9, §10)."""

from __future__ import annotations

from datetime import date

import pybreaker
import pytest
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from apps.common.actors import Actor
from apps.employers.models import Employer
from apps.endorsements import services
from apps.endorsements.models import Endorsement
from apps.endorsements.tests.factories import PolicyFactory, addition
from apps.insurers.sandbox.setup import sandbox_register
from apps.ledger import services as ledger
from apps.loan_applications.tests.factories import LoanApplicationPayloadFactory
from apps.outbox.testing import drain
from apps.partners.webhooks.dispatch import dispatch_once
from apps.partners.webhooks.models import Event
from apps.partners.webhooks.receiver import Receiver

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

SYSTEM = Actor.system("tests")
TODAY = date(2026, 6, 1)


@pytest.fixture
def world(live_server, make_key, time_machine, require_postgres, settings, monkeypatch):
    settings.WEBHOOKS_ALLOW_LOCAL_HTTP = True
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30, name="test-bureau-events")
    monkeypatch.setattr("apps.loan_applications.bureau.bureau_breaker", lambda: breaker)
    time_machine.move_to(timezone.make_aware(timezone.datetime(2026, 6, 1, 10, 0)), tick=True)
    [insurer] = sandbox_register(base_url=live_server.url)
    policy = PolicyFactory(insurer=insurer)
    client = make_key(partner=policy.employer.partner, all_employers=True)
    with Receiver() as receiver:
        response = client.post(
            "/api/v1/webhook-endpoints",
            {"url": receiver.url, "event_types": ["endorsement.received", "endorsement.validated",
                                                  "endorsement.funds_locked", "endorsement.sent",
                                                  "endorsement.confirmed", "endorsement.active",
                                                  "endorsement_batch.completed", "ledger.topup_posted",
                                                  "ledger.low_balance", "loan_application.decided"]},
        )  # fmt: skip
        assert response.status_code == 201, response.content
        receiver.secrets = [response.json()["secret"]]
        yield policy, client, receiver


def run_pipeline(rounds: int = 6) -> None:
    for _ in range(rounds):
        drain()
        if not services.scheduler_tick(actor=SYSTEM, force=True):
            drain()
            return


def deliver_all() -> None:
    drain()
    while dispatch_once():  # each pass sequences committed events first
        pass


def test_an_endorsement_publishes_each_status_once_in_order_with_its_money_events(world):
    policy, client, receiver = world
    Employer.objects.filter(pk=policy.employer_id).update(low_balance_threshold=9_990_00)
    ledger.topup_post(employer_id=policy.employer_id, amount=10_000_00, reference="t-1", actor=SYSTEM)

    response = client.post("/api/v1/endorsements", addition(policy, "E-1", effective=TODAY))
    assert response.status_code == 202
    endorsement_id = response.json()["id"]
    run_pipeline()
    deliver_all()

    assert Endorsement.objects.get(pk=endorsement_id).status == "ACTIVE"
    events = list(Event.objects.filter(object_type="endorsement", object_id=str(endorsement_id)).order_by("position"))
    assert [(e.type, e.sequence) for e in events] == [
        ("endorsement.received", 1),
        ("endorsement.validated", 2),
        ("endorsement.funds_locked", 3),
        ("endorsement.sent", 4),
        ("endorsement.confirmed", 5),
        ("endorsement.active", 6),
    ]
    assert events[-1].data["status"] == "ACTIVE"
    assert events[-1].data["premium_direction"] == "debit"
    assert [e.type for e in Event.objects.filter(type__startswith="ledger.").order_by("position")] == [
        "ledger.topup_posted",
        "ledger.low_balance",  # the hold took `available` below the threshold: once
    ]
    # Delivered once each, in order, each verified by the library with the endpoint's secret.
    received = [(r.json["type"], r.json["object"]["id"]) for r in receiver.received]
    assert received == [(e.type, e.object_id) for e in Event.objects.order_by("position")]
    assert all(r.verified for r in receiver.received)
    assert len({r.webhook_id for r in receiver.received}) == len(receiver.received)
    for r in receiver.received:
        Webhook(receiver.secrets[0]).verify(r.body, r.headers)
    topup = next(r.json for r in receiver.received if r.json["type"] == "ledger.topup_posted")
    assert topup["data"]["amount"] == "10000.00"
    assert topup["employer"] == policy.employer_id


def test_a_batch_publishes_completed_once_when_every_row_is_final(world):
    policy, client, receiver = world
    ledger.topup_post(employer_id=policy.employer_id, amount=100_000_00, reference="t-2", actor=SYSTEM)
    rows = [
        {k: v for k, v in addition(policy, f"B-{i}", effective=TODAY).items() if k not in ("employer", "policy")}
        for i in range(3)
    ]
    response = client.post(
        "/api/v1/endorsement-batches", {"employer": policy.employer_id, "policy": policy.pk, "rows": rows}
    )
    assert response.status_code == 202
    run_pipeline()
    run_pipeline()
    deliver_all()
    completed = list(Event.objects.filter(type="endorsement_batch.completed"))
    assert len(completed) == 1
    assert completed[0].data["counts"] == {"ACTIVE": 3}
    assert completed[0].object_id == str(response.json()["id"])
    assert Event.objects.filter(type="endorsement.received").count() == 3
    assert [r.json["type"] for r in receiver.received].count("endorsement_batch.completed") == 1


def test_a_loan_decision_publishes_loan_application_decided(world):
    _, client, receiver = world
    payload = LoanApplicationPayloadFactory(
        pan_number="ABCDE1234F", monthly_income="75000.00", requested_amount="500000.00", loan_type="PERSONAL"
    )
    application_id = client.post("/api/v1/loan-applications", payload).json()["id"]
    drain()
    deliver_all()
    [event] = Event.objects.filter(type="loan_application.decided")
    assert (event.object_id, event.employer_id, event.sequence) == (application_id, None, 1)
    assert event.data["status"] == "PRE_APPROVED"
    assert "pan" not in str(event.data).lower()
    [request] = [r for r in receiver.received if r.json["type"] == "loan_application.decided"]
    assert request.json["data"]["id"] == application_id
    assert request.verified
