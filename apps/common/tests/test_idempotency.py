"""Idempotency-Key semantics on a real creating endpoint (POST /api/v1/employers)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.common.models import IdempotencyRecord, IdempotencyStatus
from apps.employers.models import Employer
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db

BODY = {"name": "Initech", "external_ref": "INI-1"}


@pytest.fixture
def client(make_key):
    return make_key(partner=PartnerFactory(name="idem"), all_employers=True)


def test_replay_returns_stored_status_and_body_with_replayed_header(client):
    first = client.post("/api/v1/employers", BODY, HTTP_IDEMPOTENCY_KEY="k-1")
    second = client.post("/api/v1/employers", BODY, HTTP_IDEMPOTENCY_KEY="k-1")

    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first
    assert second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert Employer.objects.count() == 1


def test_post_replayed_three_times_leaves_identical_state(client):
    responses = [client.post("/api/v1/employers", BODY, HTTP_IDEMPOTENCY_KEY="k-3x") for _ in range(4)]

    assert {r.status_code for r in responses} == {201}
    assert len({r.content for r in responses}) == 1
    assert Employer.objects.count() == 1


def test_same_key_with_different_body_is_422_and_changes_nothing(client):
    client.post("/api/v1/employers", BODY, HTTP_IDEMPOTENCY_KEY="k-2")

    response = client.post("/api/v1/employers", {**BODY, "name": "Other"}, HTTP_IDEMPOTENCY_KEY="k-2")

    assert response.status_code == 422
    assert response.json()["type"].endswith("idempotency-key-reused")
    assert list(Employer.objects.values_list("name", flat=True)) == ["Initech"]


def test_same_key_while_first_is_running_is_409(client):
    IdempotencyRecord.objects.create(
        partner_id=client.api_key.partner_id,
        key="k-busy",
        requester_scope="all",  # claimed by a key acting for all the partner's employers, as `client` does
        fingerprint=_fingerprint(BODY),
        status=IdempotencyStatus.IN_PROGRESS,
        locked_until=timezone.now() + timedelta(seconds=30),
        expires_at=timezone.now() + timedelta(hours=24),
    )

    response = client.post("/api/v1/employers", BODY, HTTP_IDEMPOTENCY_KEY="k-busy")

    assert response.status_code == 409
    assert response["Retry-After"] == "1"
    assert Employer.objects.count() == 0


def test_claim_abandoned_by_a_crashed_request_is_taken_over(client):
    IdempotencyRecord.objects.create(
        partner_id=client.api_key.partner_id,
        key="k-dead",
        requester_scope="all",  # claimed by a key acting for all the partner's employers, as `client` does
        fingerprint=_fingerprint(BODY),
        status=IdempotencyStatus.IN_PROGRESS,
        locked_until=timezone.now() - timedelta(seconds=1),
        expires_at=timezone.now() + timedelta(hours=24),
    )

    response = client.post("/api/v1/employers", BODY, HTTP_IDEMPOTENCY_KEY="k-dead")

    assert response.status_code == 201
    assert IdempotencyRecord.objects.get(key="k-dead").status == IdempotencyStatus.COMPLETED


def test_failed_request_releases_the_key_so_a_corrected_retry_can_use_it(client):
    bad = client.post("/api/v1/employers", {"external_ref": "X"}, HTTP_IDEMPOTENCY_KEY="k-fix")
    assert bad.status_code == 422
    assert not IdempotencyRecord.objects.filter(key="k-fix").exists()

    good = client.post("/api/v1/employers", {"name": "N", "external_ref": "X"}, HTTP_IDEMPOTENCY_KEY="k-fix")

    assert good.status_code == 201


def test_keys_are_scoped_to_the_partner(client, make_key):
    other = make_key(partner=PartnerFactory(name="idem-2"), all_employers=True)

    a = client.post("/api/v1/employers", BODY, HTTP_IDEMPOTENCY_KEY="shared")
    b = other.post("/api/v1/employers", BODY, HTTP_IDEMPOTENCY_KEY="shared")

    assert a.status_code == b.status_code == 201
    assert "Idempotent-Replayed" not in b
    assert Employer.objects.count() == 2


def test_expired_key_is_a_fresh_request(client, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    client.post("/api/v1/employers", BODY, HTTP_IDEMPOTENCY_KEY="k-old")
    time_machine.shift(timedelta(hours=25))

    response = client.post("/api/v1/employers", {**BODY, "external_ref": "INI-2"}, HTTP_IDEMPOTENCY_KEY="k-old")

    assert response.status_code == 201
    assert "Idempotent-Replayed" not in response
    assert Employer.objects.count() == 2


@pytest.mark.parametrize("key", ["", " ", "x" * 256])
def test_invalid_keys_are_422(client, key):
    response = client.post("/api/v1/employers", BODY, HTTP_IDEMPOTENCY_KEY=key)

    assert response.status_code == 422
    assert Employer.objects.count() == 0


def _fingerprint(body: dict) -> str:
    import json

    from apps.common.idempotency import request_fingerprint

    return request_fingerprint(method="POST", path="/api/v1/employers", body=json.dumps(body).encode())
