"""POST /api/v1/insurer-callbacks/{code}: Standard Webhooks signatures, per-item results, redelivery."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.audit.models import InsurerExchangeEvent
from apps.employers.tests.factories import InsurerFactory
from apps.insurers.callback_secrets import callback_secret_seal
from apps.insurers.models import CallbackEvent, Insurer, InsurerProtocol, InsurerSubmission, SubmissionState
from apps.insurers.sandbox.callbacks import sign_headers
from apps.insurers.sandbox.setup import generate_callback_secret
from apps.outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db
URL = "/api/v1/insurer-callbacks/acme-life"
SECRET = generate_callback_secret()  # the plaintext both sides know; the insurer row stores it sealed


@pytest.fixture
def insurer() -> Insurer:
    return InsurerFactory(
        code="acme-life",
        protocol=InsurerProtocol.REST,
        endpoint="https://x",
        callback_secret=callback_secret_seal(SECRET, insurer_code="acme-life"),
    )


@pytest.fixture
def sent(insurer):
    """Two endorsements we sent to the insurer (our submission log)."""
    now = timezone.now()
    return [
        InsurerSubmission.objects.create(
            insurer=insurer,
            endorsement_id=eid,
            idempotency_key=f"key-{eid}",
            kind="addition",
            first_sent_at=now,
            sent_at=now,
            attempts=1,
            last_outcome=SubmissionState.PENDING,
        )
        for eid in (501, 502)
    ]


def post(body: object, *, secret: str, msg_id: str = "msg_1", at: datetime | None = None, headers=None):
    raw = json.dumps(body)
    signed = sign_headers(secret=secret, msg_id=msg_id, body=raw, at=at)
    signed.pop("Content-Type")
    if headers:
        signed.update(headers)
    extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in signed.items()}
    return APIClient().post(URL, data=raw, content_type="application/json", **extra)


def result_events():
    return list(OutboxMessage.objects.filter(topic="insurer.result_received").order_by("id"))


def test_valid_batch_publishes_one_event_per_known_item(insurer, sent) -> None:
    body = {
        "events": [
            {"type": "endorsement.confirmed", "data": {"idempotency_key": "key-501", "insurer_reference": "INS-1"}},
            {"type": "endorsement.rejected", "data": {"endorsement_id": 502, "reason": "Member already exists"}},
        ]
    }

    response = post(body, secret=SECRET)

    assert response.status_code == 200
    assert response.json() == {
        "results": [
            {"index": 0, "status": 200, "detail": "Endorsement confirmed."},
            {"index": 1, "status": 200, "detail": "Endorsement rejected."},
        ]
    }
    events = result_events()
    assert [e.payload for e in events] == [
        {
            "endorsement_id": 501,
            "outcome": "confirmed",
            "insurer_reference": "INS-1",
            "rejection_class": None,
            "rejection_reason": None,
            "insurer": "acme-life",
            "idempotency_key": "key-501",
        },
        {
            "endorsement_id": 502,
            "outcome": "rejected",
            "insurer_reference": None,
            "rejection_class": "duplicate_member",
            "rejection_reason": "Member already exists",
            "insurer": "acme-life",
            "idempotency_key": "key-502",
        },
    ]
    assert [e.key for e in events] == ["endorsement:501", "endorsement:502"]
    assert dict(InsurerSubmission.objects.values_list("endorsement_id", "last_outcome")) == {
        501: "confirmed",
        502: "rejected",
    }
    exchange = InsurerExchangeEvent.objects.get()
    assert (exchange.direction, exchange.operation, exchange.response_status) == ("inbound", "callback", 200)


def test_single_event_body_is_accepted(insurer, sent) -> None:
    body = {"type": "endorsement.confirmed", "data": {"endorsement_id": 501, "insurer_reference": "INS-9"}}

    response = post(body, secret=SECRET)

    assert response.status_code == 200
    assert response.json()["results"] == [{"index": 0, "status": 200, "detail": "Endorsement confirmed."}]
    assert len(result_events()) == 1
    assert InsurerExchangeEvent.objects.get().endorsement_id == 501


def _assert_nothing_changed() -> None:
    assert not result_events()
    assert not CallbackEvent.objects.exists()
    assert set(InsurerSubmission.objects.values_list("last_outcome", flat=True)) == {"pending"}


def test_bad_signature_is_401_and_changes_nothing(insurer, sent) -> None:
    body = {"type": "endorsement.confirmed", "data": {"endorsement_id": 501}}

    response = post(body, secret=generate_callback_secret())

    assert response.status_code == 401
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 401
    _assert_nothing_changed()
    assert InsurerExchangeEvent.objects.get().response_status == 401


def test_missing_signature_headers_are_401(insurer, sent) -> None:
    response = APIClient().post(URL, data={"type": "endorsement.confirmed"}, format="json")

    assert response.status_code == 401
    _assert_nothing_changed()


def test_stale_timestamp_is_401(insurer, sent) -> None:
    body = {"type": "endorsement.confirmed", "data": {"endorsement_id": 501}}

    response = post(body, secret=SECRET, at=datetime.now(UTC) - timedelta(minutes=5, seconds=30))
    future = post(body, secret=SECRET, at=datetime.now(UTC) + timedelta(minutes=6))

    assert (response.status_code, future.status_code) == (401, 401)
    _assert_nothing_changed()


def test_timestamp_within_five_minutes_is_accepted(insurer, sent) -> None:
    body = {"type": "endorsement.confirmed", "data": {"endorsement_id": 501}}

    response = post(body, secret=SECRET, at=datetime.now(UTC) - timedelta(minutes=4))

    assert response.status_code == 200


def test_redelivery_of_the_same_webhook_is_a_no_op(insurer, sent) -> None:
    body = {"events": [{"type": "endorsement.confirmed", "data": {"endorsement_id": 501, "insurer_reference": "A"}}]}
    first = post(body, secret=SECRET, msg_id="msg_same")

    again = post(body, secret=SECRET, msg_id="msg_same")

    assert first.status_code == again.status_code == 200
    assert again.json()["results"] == [{"index": 0, "status": 200, "detail": "Duplicate delivery; already processed."}]
    assert len(result_events()) == 1
    assert CallbackEvent.objects.count() == 1


def test_same_result_under_a_new_webhook_id_is_not_published_twice(insurer, sent) -> None:
    body = {"type": "endorsement.confirmed", "data": {"endorsement_id": 501, "insurer_reference": "A"}}
    post(body, secret=SECRET, msg_id="msg_a")

    response = post(body, secret=SECRET, msg_id="msg_b")

    assert response.json()["results"][0]["detail"] == "Result already recorded."
    assert len(result_events()) == 1


def test_unknown_item_is_404_while_the_others_succeed(insurer, sent) -> None:
    other = InsurerFactory(code="other-life")
    now = timezone.now()
    InsurerSubmission.objects.create(
        insurer=other, endorsement_id=777, idempotency_key="key-777", kind="addition", first_sent_at=now, sent_at=now
    )
    body = {
        "events": [
            {"type": "endorsement.confirmed", "data": {"endorsement_id": 999}},
            {"type": "endorsement.confirmed", "data": {"idempotency_key": "key-502", "insurer_reference": "B"}},
            {"type": "endorsement.confirmed", "data": {"idempotency_key": "key-777"}},  # another insurer's
        ]
    }

    response = post(body, secret=SECRET)

    assert response.status_code == 200
    assert [(r["index"], r["status"]) for r in response.json()["results"]] == [(0, 404), (1, 200), (2, 404)]
    assert [e.payload["endorsement_id"] for e in result_events()] == [502]


def test_unknown_insurer_is_404(insurer) -> None:
    response = APIClient().post("/api/v1/insurer-callbacks/nobody", data={}, format="json")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"


def test_malformed_events_are_422_and_change_nothing(insurer, sent) -> None:
    body = {"events": [{"type": "endorsement.exploded", "data": {}}]}

    response = post(body, secret=SECRET)

    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    _assert_nothing_changed()


def test_stored_bodies_are_redacted(insurer, sent) -> None:
    body = {
        "type": "endorsement.rejected",
        "data": {"endorsement_id": 501, "reason": "Email asha@example.com does not match"},
    }

    post(body, secret=SECRET)

    exchange = InsurerExchangeEvent.objects.get()
    assert "asha@example.com" not in exchange.request_body
    assert "asha@example.com" not in exchange.response_body


# Kind 1 (issue 8): an id or key that cannot name an endorsement is a 404 for its item, never a 5xx, and the
# other items of the batch still apply. Generated over both lookup fields and every way of being unresolvable.
UNRESOLVABLE_LOOKUPS = [
    *[
        ("endorsement_id", value)
        for value in (10**30, 2**63, -(2**63) - 1, -1, 0, "abc", "1e3", "12345678901234567890", 1.5, True, [], {})
    ],
    *[("idempotency_key", value) for value in (123, "", "k" * 256, "a\u0000b", "\ud800", [], {"k": 1}, True)],
]


@pytest.mark.parametrize(
    ("field", "value"), UNRESOLVABLE_LOOKUPS, ids=[f"{f}={v!r}"[:40] for f, v in UNRESOLVABLE_LOOKUPS]
)
def test_unresolvable_id_is_404_for_its_item_and_the_rest_apply(insurer, sent, field, value) -> None:
    body = {
        "events": [
            {"type": "endorsement.confirmed", "data": {field: value, "insurer_reference": "X"}},
            {"type": "endorsement.confirmed", "data": {"endorsement_id": 502, "insurer_reference": "B"}},
        ]
    }

    response = post(body, secret=SECRET)

    assert response.status_code == 200
    assert response.json()["results"] == [
        {"index": 0, "status": 404, "detail": "No such endorsement was sent to this insurer."},
        {"index": 1, "status": 200, "detail": "Endorsement confirmed."},
    ]
    assert [e.payload["endorsement_id"] for e in result_events()] == [502]
    assert dict(InsurerSubmission.objects.values_list("endorsement_id", "last_outcome")) == {
        501: "pending",
        502: "confirmed",
    }
    assert CallbackEvent.objects.count() == 1


def test_largest_bigint_id_is_a_plain_404(insurer, sent) -> None:
    body = {"type": "endorsement.confirmed", "data": {"endorsement_id": 2**63 - 1}}

    response = post(body, secret=SECRET)

    assert response.status_code == 200
    assert response.json()["results"][0]["status"] == 404
    _assert_nothing_changed()


def test_digits_string_id_still_names_the_endorsement(insurer, sent) -> None:
    body = {"type": "endorsement.confirmed", "data": {"endorsement_id": "501", "insurer_reference": "S"}}

    response = post(body, secret=SECRET)

    assert response.json()["results"] == [{"index": 0, "status": 200, "detail": "Endorsement confirmed."}]
    assert [e.payload["endorsement_id"] for e in result_events()] == [501]


@pytest.mark.parametrize("field", ["insurer_reference", "reason"])
def test_control_characters_in_callback_text_are_422_naming_the_field(insurer, sent, field) -> None:
    body = {"events": [{"type": "endorsement.rejected", "data": {"endorsement_id": 501, field: "a\u0007b"}}]}

    response = post(body, secret=SECRET)

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"pointer": f"/events/0/data/{field}", "detail": "Must not contain control characters."}
    ]
    _assert_nothing_changed()
