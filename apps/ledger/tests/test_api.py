"""Ledger API (SPEC §6): balance, top-ups, entries; tenancy, validation, idempotency, paging."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.employers.tests.factories import EmployerFactory
from apps.ledger import services
from apps.ledger.models import Hold, LedgerEntry, LedgerTransaction
from apps.ledger.tests.factories import SYSTEM, funded_employer
from apps.outbox.models import OutboxMessage
from apps.partners.models import Scope
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    return body


@pytest.fixture
def partner():
    return PartnerFactory(name="ledger-hr")


@pytest.fixture
def employer_a(partner):
    return funded_employer(1000_00, partner=partner, low_balance_threshold=950_00)


@pytest.fixture
def employer_b(partner):
    return funded_employer(500_00, partner=partner)


@pytest.fixture
def client_a(partner, make_key, employer_a):
    return make_key(partner=partner, employers=[employer_a])


def unchanged() -> tuple[int, int, int, int]:
    return (
        LedgerTransaction.objects.count(),
        LedgerEntry.objects.count(),
        OutboxMessage.objects.count(),
        AuditEvent.objects.filter(action__startswith="ledger.").count(),
    )


def test_balance_returns_money_as_decimal_strings(client_a, employer_a):
    services.hold_place(employer_id=employer_a.pk, amount=100_50, reference="h1", actor=SYSTEM)

    response = client_a.get(f"/api/v1/ledger/balance?employer={employer_a.pk}")

    assert response.status_code == 200, response.content
    assert response.json() == {
        "employer": employer_a.pk,
        "currency": "INR",
        "posted": "1000.00",
        "held": "100.50",
        "available": "899.50",
        "low_balance": True,
        "low_balance_threshold": "950.00",
        "runway_days": None,
    }


def test_balance_runway_is_a_number(client_a, employer_a):
    services.hold_place(employer_id=employer_a.pk, amount=300_00, reference="h1", actor=SYSTEM)
    services.hold_capture(reference="h1", actor=SYSTEM)

    body = client_a.get(f"/api/v1/ledger/balance?employer={employer_a.pk}").json()

    # 700 available ÷ (300 / 30 per day) = 70 days
    assert body["runway_days"] == 70.0


@pytest.mark.parametrize("query", ["", "?employer=", "?employer=abc", "?employer=0"])
def test_balance_without_a_valid_employer_is_422(client_a, query):
    body = assert_problem(client_a.get(f"/api/v1/ledger/balance{query}"), 422)

    assert [e["pointer"] for e in body["errors"]] == ["/employer"]


def test_key_for_employer_a_gets_404_for_everything_of_employer_b(client_a, employer_b):
    before = unchanged()

    assert_problem(client_a.get(f"/api/v1/ledger/balance?employer={employer_b.pk}"), 404)
    assert_problem(client_a.get(f"/api/v1/ledger/entries?employer={employer_b.pk}"), 404)
    assert_problem(
        client_a.post("/api/v1/ledger/topups", {"employer": employer_b.pk, "amount": "1.00", "reference": "x"}), 404
    )
    assert_problem(client_a.get("/api/v1/ledger/balance?employer=999999"), 404)

    assert unchanged() == before


def test_other_partners_employer_is_404(make_key, employer_a):
    stranger = make_key(partner=PartnerFactory(name="other"), all_employers=True)

    assert_problem(stranger.get(f"/api/v1/ledger/balance?employer={employer_a.pk}"), 404)


def test_scopes_are_enforced(partner, make_key, employer_a):
    read_only = make_key(partner=partner, employers=[employer_a], scopes=[Scope.LEDGER_READ])
    no_ledger = make_key(partner=partner, employers=[employer_a], scopes=[Scope.EMPLOYERS_READ])

    assert read_only.get(f"/api/v1/ledger/balance?employer={employer_a.pk}").status_code == 200
    assert_problem(
        read_only.post("/api/v1/ledger/topups", {"employer": employer_a.pk, "amount": "1.00", "reference": "x"}), 403
    )
    assert_problem(no_ledger.get(f"/api/v1/ledger/balance?employer={employer_a.pk}"), 403)


def test_topup_returns_201_with_the_transaction_and_credits_the_account(client_a, employer_a):
    response = client_a.post(
        "/api/v1/ledger/topups", {"employer": employer_a.pk, "amount": "250.75", "reference": "NEFT-1"}
    )

    assert response.status_code == 201, response.content
    body = response.json()
    txn = LedgerTransaction.objects.get(reference="NEFT-1")
    assert body == {
        "id": txn.pk,
        "employer": employer_a.pk,
        "kind": "topup",
        "reference": "NEFT-1",
        "amount": "250.75",
        "endorsement_id": None,
        "created_at": body["created_at"],
    }
    assert client_a.get(f"/api/v1/ledger/balance?employer={employer_a.pk}").json()["posted"] == "1250.75"
    event = AuditEvent.objects.get(action="ledger.topup_posted", object_id=str(txn.pk))
    assert event.actor.startswith("api_key:")


def test_topup_same_reference_again_returns_the_same_transaction_and_changes_nothing(client_a, employer_a):
    payload = {"employer": employer_a.pk, "amount": "250.00", "reference": "NEFT-1"}
    first = client_a.post("/api/v1/ledger/topups", payload)
    before = unchanged()

    again = client_a.post("/api/v1/ledger/topups", payload)

    assert (first.status_code, again.status_code) == (201, 201)
    assert again.json() == first.json()
    assert unchanged() == before


def test_topup_reference_reused_with_another_amount_is_409_and_changes_nothing(client_a, employer_a):
    client_a.post("/api/v1/ledger/topups", {"employer": employer_a.pk, "amount": "250.00", "reference": "NEFT-1"})
    before = unchanged()

    body = assert_problem(
        client_a.post("/api/v1/ledger/topups", {"employer": employer_a.pk, "amount": "9.00", "reference": "NEFT-1"}),
        409,
    )

    assert body["type"].endswith("ledger-reference-conflict")
    assert unchanged() == before


@pytest.mark.parametrize("amount", ["0.00", "-5.00", "1.234", "abc", 12.5, None])
def test_topup_with_a_bad_amount_is_422_and_changes_nothing(client_a, employer_a, amount):
    before = unchanged()

    body = assert_problem(
        client_a.post("/api/v1/ledger/topups", {"employer": employer_a.pk, "amount": amount, "reference": "r"}), 422
    )

    assert [e["pointer"] for e in body["errors"]] == ["/amount"]
    assert unchanged() == before


def test_topup_missing_fields_are_422_naming_each(client_a):
    body = assert_problem(client_a.post("/api/v1/ledger/topups", {}), 422)

    assert {e["pointer"] for e in body["errors"]} == {"/employer", "/amount", "/reference"}


def test_topup_idempotency_key_replay_returns_the_stored_response(client_a, employer_a):
    payload = {"employer": employer_a.pk, "amount": "10.00", "reference": "IK-1"}
    first = client_a.post("/api/v1/ledger/topups", payload, HTTP_IDEMPOTENCY_KEY="key-1")
    before = unchanged()

    replay = client_a.post("/api/v1/ledger/topups", payload, HTTP_IDEMPOTENCY_KEY="key-1")
    mismatch = client_a.post("/api/v1/ledger/topups", {**payload, "amount": "11.00"}, HTTP_IDEMPOTENCY_KEY="key-1")

    assert first.status_code == 201
    assert replay.status_code == 201
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert_problem(mismatch, 422)
    assert unchanged() == before


def test_entries_are_cursor_paginated_newest_first(client_a, employer_a):
    for i in range(5):
        services.topup_post(employer_id=employer_a.pk, amount=1_00, reference=f"p{i}", actor=SYSTEM)

    first = client_a.get(f"/api/v1/ledger/entries?employer={employer_a.pk}&limit=4")
    assert first.status_code == 200, first.content
    page1 = first.json()
    assert 'rel="next"' in first["Link"]
    second = client_a.get(page1["next"])
    page2 = second.json()

    rows = page1["results"] + page2["results"]
    assert len(page1["results"]) == 4
    assert page2["next"] is None
    assert [r["balance_after"] for r in rows] == ["1005.00", "1004.00", "1003.00", "1002.00", "1001.00", "1000.00"]
    newest = rows[0]
    txn = LedgerTransaction.objects.get(reference="p4")
    assert newest == {
        "id": newest["id"],
        "transaction_id": txn.pk,
        "kind": "topup",
        "amount": "1.00",
        "direction": "credit",
        "balance_after": "1005.00",
        "endorsement_id": None,
        "created_at": newest["created_at"],
    }


def test_entries_show_capture_with_endorsement_and_filter_by_time(client_a, employer_a):
    services.hold_place(employer_id=employer_a.pk, amount=5_00, reference="h", endorsement_id=42, actor=SYSTEM)
    services.hold_capture(reference="h", actor=SYSTEM)
    capture_time = LedgerTransaction.objects.get(kind="capture").created_at

    rows = client_a.get(
        "/api/v1/ledger/entries", {"employer": employer_a.pk, "since": capture_time.isoformat()}
    ).json()["results"]
    none_before = client_a.get(
        "/api/v1/ledger/entries", {"employer": employer_a.pk, "until": "2000-01-01T00:00:00Z"}
    ).json()["results"]

    assert [(r["kind"], r["direction"], r["amount"], r["endorsement_id"]) for r in rows] == [
        ("capture", "debit", "5.00", 42)
    ]
    assert none_before == []
    assert Hold.objects.count() == 1


def test_entries_with_bad_times_are_422(client_a, employer_a):
    body = assert_problem(client_a.get(f"/api/v1/ledger/entries?employer={employer_a.pk}&since=yesterday"), 422)
    assert [e["pointer"] for e in body["errors"]] == ["/since"]
    body = assert_problem(
        client_a.get(
            f"/api/v1/ledger/entries?employer={employer_a.pk}&since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z"
        ),
        422,
    )
    assert [e["pointer"] for e in body["errors"]] == ["/until"]


def test_employer_without_account_has_a_zero_balance(partner, make_key):
    employer = EmployerFactory(partner=partner)
    client = make_key(partner=partner, employers=[employer])

    body = client.get(f"/api/v1/ledger/balance?employer={employer.pk}").json()

    assert (body["posted"], body["available"], body["runway_days"]) == ("0.00", "0.00", None)
