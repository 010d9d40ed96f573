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
from apps.endorsements.models import Endorsement
from apps.endorsements.tests.factories import PolicyFactory, addition
from apps.endorsements.tests.pipeline import run_pipeline
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
                                                  "ledger.low_balance", "loan_application.decided",
                                                  "endorsement.on_hold_funds", "endorsement.cancelled",
                                                  "endorsement.rejected", "reconciliation.completed"]},
        )  # fmt: skip
        assert response.status_code == 201, response.content
        receiver.secrets = [response.json()["secret"]]
        yield policy, client, receiver


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
    [request] = [r for r in receiver.received if r.json["type"] == "endorsement_batch.completed"]
    Webhook(receiver.secrets[0]).verify(request.body, request.headers)
    assert request.json["object"] == {"type": "endorsement_batch", "id": str(response.json()["id"])}


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
    Webhook(receiver.secrets[0]).verify(request.body, request.headers)


def statuses_received(receiver: Receiver, endorsement_id: int) -> list[str]:
    """The endorsement's events as received, each verified with the library and the endpoint's secret."""
    types = []
    for r in receiver.received:
        if r.json["object"] == {"type": "endorsement", "id": str(endorsement_id)}:
            Webhook(receiver.secrets[0]).verify(r.body, r.headers)
            types.append(r.json["type"])
    return types


def test_an_endorsement_without_funds_publishes_on_hold_funds_then_cancelled(world):
    policy, client, receiver = world
    response = client.post("/api/v1/endorsements", addition(policy, "H-1", effective=TODAY))
    assert response.status_code == 202
    endorsement_id = response.json()["id"]
    run_pipeline()
    assert Endorsement.objects.get(pk=endorsement_id).status == "ON_HOLD_FUNDS"
    cancelled = client.post(f"/api/v1/endorsements/{endorsement_id}/cancel")
    assert cancelled.status_code == 200, cancelled.content
    deliver_all()
    assert statuses_received(receiver, endorsement_id) == [
        "endorsement.received",
        "endorsement.validated",
        "endorsement.on_hold_funds",
        "endorsement.cancelled",
    ]
    last = receiver.received[-1].json
    assert (last["sequence"], last["data"]["status"], last["data"]["previous_status"]) == (
        4,
        "CANCELLED",
        "ON_HOLD_FUNDS",
    )


def test_an_endorsement_the_insurer_rejects_publishes_rejected(world):
    policy, client, receiver = world
    ledger.topup_post(employer_id=policy.employer_id, amount=10_000_00, reference="t-r", actor=SYSTEM)
    response = client.post("/api/v1/endorsements", addition(policy, "R-1", effective=TODAY, dob="1950-01-01"))
    assert response.status_code == 202
    endorsement_id = response.json()["id"]
    run_pipeline()
    deliver_all()
    assert Endorsement.objects.get(pk=endorsement_id).status == "REJECTED"
    assert statuses_received(receiver, endorsement_id) == [
        "endorsement.received",
        "endorsement.validated",
        "endorsement.funds_locked",
        "endorsement.sent",
        "endorsement.rejected",
    ]
    assert receiver.received[-1].json["data"]["status"] == "REJECTED"


def test_a_reconciliation_run_publishes_reconciliation_completed(world):
    from apps.insurers.sandbox.roster import sandbox_roster_load
    from apps.reconciliation.runner import reconciliation_execute
    from apps.reconciliation.selectors import scope_employer_ids
    from apps.reconciliation.services import reconciliation_start

    policy, _client, receiver = world
    sandbox_roster_load(code="sandbox-rest", policy_number=policy.policy_number, members=[])
    run = reconciliation_start(
        insurer_id=policy.insurer_id,
        employer_ids=scope_employer_ids(insurer_id=policy.insurer_id, employer_id=policy.employer_id),
        employer_id=policy.employer_id,
        policy_id=None,
        partner_id=None,
        actor=SYSTEM,
        queue=False,
    )
    done = reconciliation_execute(run_id=run.pk, page_size=50, sleep=lambda _seconds: None)
    assert done.status == "COMPLETED"
    deliver_all()
    [request] = [r for r in receiver.received if r.json["type"] == "reconciliation.completed"]
    Webhook(receiver.secrets[0]).verify(request.body, request.headers)
    assert request.json["object"] == {"type": "reconciliation", "id": str(run.pk)}
    assert request.json["employer"] == policy.employer_id
    assert (request.json["data"]["id"], request.json["data"]["status"]) == (run.pk, "COMPLETED")
