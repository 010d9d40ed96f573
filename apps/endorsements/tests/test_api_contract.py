"""The endorsement API's promises beyond field validation (issue 8): the quote is exact (kind 7), identical content
is a 409 with the existing id before any member rule (kind 10), an upload replayed with its Idempotency-Key is
the stored 202 whatever its multipart boundary (kind 8), and a stored response is replayed only to a key that may
see it (kind 9)."""

from __future__ import annotations

import json
import uuid
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from django.utils import timezone

from apps.common.actors import Actor
from apps.common.idempotency import request_fingerprint
from apps.common.models import IdempotencyRecord
from apps.employers.services import coverage_start, employee_upsert
from apps.endorsements.api.serializers import EXACT_AMOUNT_PATTERN
from apps.endorsements.models import Endorsement, EndorsementBatch, EndorsementStatus
from apps.endorsements.tests.factories import PolicyFactory, addition, correction, deletion
from apps.endorsements.tests.test_bad_input import CSV_HEADER, _csv, _csv_row
from apps.outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db

TODAY = date(2026, 6, 1)
S = EndorsementStatus


@pytest.fixture
def policy(time_machine):
    time_machine.move_to(timezone.make_aware(timezone.datetime(2026, 6, 1, 10, 0)), tick=False)
    return PolicyFactory()


@pytest.fixture
def client(make_key, policy):
    return make_key(partner=policy.employer.partner, employers=[policy.employer])


def cover(policy: Any, code: str) -> None:
    employee, _ = employee_upsert(
        employer_id=policy.employer_id,
        employee_code=code,
        details={"first_name": "A", "last_name": "B", "date_of_birth": date(1990, 1, 1), "gender": "male"},
    )
    coverage_start(
        employee=employee,
        policy=policy,
        sum_insured=500_000_00,
        start_date=date(2026, 5, 1),
        endorsement_id=None,
        actor=Actor.system("tests"),
    )


def written() -> tuple[int, int, int]:
    return (
        Endorsement.objects.count(),
        EndorsementBatch.objects.count(),
        OutboxMessage.objects.filter(topic__startswith="endorsements").count(),
    )


# --- kind 7: the quote is exact -----------------------------------------------------------------------------


def test_quote_is_rounded_once_and_shows_the_exact_annual_premium(client, policy):
    body = addition(policy, "Q-1", effective=date(2027, 3, 13), sum_insured="3650.00")

    response = client.post("/api/v1/endorsements/quote", body)

    assert response.status_code == 200, response.content
    assert response.json() == {
        "premium_amount": "0.86",  # 3650.00 × 4.5‰ × 19/365 = 0.855 exactly
        "premium_direction": "debit",
        "annual_premium": "16.425",
        "annual_premium_before": None,
        "remaining_days": 19,
        "term_days": 365,
    }
    assert written() == (0, 0, 0)


def test_a_correction_quote_shows_both_annual_premiums_so_the_premium_can_be_recomputed(client, policy):
    cover(policy, "Q-2")  # sum insured 500,000.00
    body = correction(policy, "Q-2", effective=date(2027, 3, 13), sum_insured="612345.67")

    response = client.post("/api/v1/endorsements/quote", body)

    assert response.status_code == 200, response.content
    quote = response.json()
    rate = policy.premium_rate_per_mille
    assert Decimal(quote["annual_premium"]) == Decimal("612345.67") * rate / 1000
    assert Decimal(quote["annual_premium_before"]) == Decimal("500000.00") * rate / 1000
    delta = (Decimal(quote["annual_premium"]) - Decimal(quote["annual_premium_before"])) * 19 / 365
    assert quote["premium_amount"] == str(delta.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    assert (quote["premium_direction"], quote["remaining_days"], quote["term_days"]) == ("debit", 19, 365)
    assert written() == (0, 0, 0)


def test_the_schema_documents_the_quote_annual_premium_as_an_exact_decimal(client):
    schema = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json").json()

    annual = schema["components"]["schemas"]["EndorsementQuote"]["properties"]["annual_premium"]
    assert (annual["type"], annual["pattern"]) == ("string", EXACT_AMOUNT_PATTERN)
    assert annual["example"] == "16.425"


# --- kind 10: duplicates -------------------------------------------------------------------------------------


def _first_and_copy(policy: Any, kind: str) -> dict[str, Any]:
    if kind == "addition":
        return addition(policy, "D-1", effective=TODAY)
    cover(policy, "D-1")
    if kind == "deletion":
        return deletion(policy, "D-1", effective=TODAY)
    return correction(policy, "D-1", effective=TODAY, sum_insured="600000.00")


@pytest.mark.parametrize("kind", ["addition", "deletion", "correction"])
def test_identical_content_within_24h_is_409_with_the_existing_id_before_member_rules(client, policy, kind):
    body = _first_and_copy(policy, kind)
    first = client.post("/api/v1/endorsements", body)
    assert first.status_code == 202, first.content
    before = written()

    again = client.post("/api/v1/endorsements", body)

    assert again.status_code == 409, again.content
    assert again.json()["existing_id"] == first.json()["id"]
    assert again.json()["type"].endswith("duplicate-endorsement")
    assert written() == before


@pytest.mark.parametrize("status", [S.FAILED, S.REJECTED, S.CANCELLED])
@pytest.mark.parametrize("kind", ["addition", "deletion", "correction"])
def test_content_that_ended_failed_rejected_or_cancelled_is_not_a_duplicate(client, policy, kind, status):
    body = _first_and_copy(policy, kind)
    first = client.post("/api/v1/endorsements", body).json()
    Endorsement.objects.filter(pk=first["id"]).update(status=status)

    again = client.post("/api/v1/endorsements", body)

    assert again.status_code == 202, again.content
    assert again.json()["id"] != first["id"]


def test_the_duplicate_check_comes_after_schema_validation_and_tenancy(client, policy, make_key):
    body = addition(policy, "D-1", effective=TODAY)
    assert client.post("/api/v1/endorsements", body).status_code == 202
    other = PolicyFactory(employer__partner=policy.employer.partner)
    stranger = make_key(partner=policy.employer.partner, employers=[other.employer])

    bad = client.post("/api/v1/endorsements", {**body, "effective_date": "2026-02-30"})
    foreign = stranger.post("/api/v1/endorsements", body)

    assert bad.status_code == 422
    assert foreign.status_code == 404
    assert Endorsement.objects.count() == 1


def test_batch_rows_duplicating_recent_content_are_row_errors_naming_the_original(client, policy):
    kept = client.post("/api/v1/endorsements", addition(policy, "B-1", effective=TODAY)).json()
    failed = client.post("/api/v1/endorsements", addition(policy, "B-2", effective=TODAY)).json()
    Endorsement.objects.filter(pk=failed["id"]).update(status=S.FAILED)
    rows = [
        {k: v for k, v in addition(policy, code, effective=TODAY).items() if k not in ("employer", "policy")}
        for code in ("B-1", "B-2", "B-3", "B-3")
    ]

    response = client.post(
        "/api/v1/endorsement-batches", {"employer": policy.employer_id, "policy": policy.pk, "rows": rows}
    )

    body = response.json()
    assert (body["accepted"], body["rejected"]) == (2, 2)
    assert [(e["row"], e["field"], e["detail"]) for e in body["errors"]] == [
        (1, "row", f"Duplicate of endorsement {kept['id']} received in the last 24 h."),
        (4, "row", "Duplicate of row 3."),
    ]


# --- kind 8: idempotent uploads ------------------------------------------------------------------------------


def multipart(fields: dict[str, str], content: bytes, boundary: str) -> bytes:
    """A multipart body as curl builds it: a fresh boundary on every send."""
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="census.csv"\r\n'
        f"Content-Type: text/csv\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts)


def send_csv(client: Any, policy: Any, content: bytes, key: str) -> Any:
    boundary = f"------------------------{uuid.uuid4().hex[:16]}"
    return client.client.generic(
        "POST",
        "/api/v1/endorsement-batches",
        multipart({"employer": str(policy.employer_id), "policy": str(policy.pk)}, content, boundary),
        content_type=f"multipart/form-data; boundary={boundary}",
        HTTP_IDEMPOTENCY_KEY=key,
    )


def test_the_same_csv_sent_twice_with_one_key_replays_the_stored_202(client, policy):
    content = _csv([_csv_row("U-1"), _csv_row("U-2")])

    first = send_csv(client, policy, content, "upload-1")
    second = send_csv(client, policy, content, "upload-1")

    assert first.status_code == second.status_code == 202, second.content
    assert "Idempotent-Replayed" not in first
    assert second["Idempotent-Replayed"] == "true"
    assert second.content == first.content
    assert (EndorsementBatch.objects.count(), Endorsement.objects.count()) == (1, 2)


@pytest.mark.parametrize("change", ["file", "policy"])
def test_a_different_file_or_field_under_the_same_key_is_422(client, policy, change):
    content = _csv([_csv_row("U-1")])
    send_csv(client, policy, content, "upload-2")
    if change == "file":
        response = send_csv(client, policy, _csv([_csv_row("U-9")]), "upload-2")
    else:
        other = PolicyFactory(employer=policy.employer)
        response = send_csv(client, other, content, "upload-2")

    assert response.status_code == 422
    assert response.json()["type"].endswith("idempotency-key-reused")
    assert (EndorsementBatch.objects.count(), Endorsement.objects.count()) == (1, 1)


def test_the_csv_header_in_the_fixture_is_the_full_header():
    assert _csv([])[: len(",".join(CSV_HEADER))].decode() == ",".join(CSV_HEADER)


def test_a_body_too_deeply_nested_to_canonicalise_is_fingerprinted_without_recursing():
    deep = ("[" * 100_000 + "]" * 100_000).encode()
    other = ("[" * 100_000 + "1" + "]" * 100_000).encode()

    first = request_fingerprint(method="POST", path="/api/v1/endorsements", body=deep)

    assert len(first) == 64
    assert first == request_fingerprint(method="POST", path="/api/v1/endorsements", body=deep)
    assert first != request_fingerprint(method="POST", path="/api/v1/endorsements", body=other)


def test_json_fingerprints_ignore_key_order_and_white_space():
    a = json.dumps({"employer": 1, "rows": [{"type": "addition"}]}).encode()
    b = b'{ "rows" : [ {"type":"addition"} ],\n "employer":1 }'

    assert request_fingerprint(method="POST", path="/p", body=a) == request_fingerprint(
        method="POST", path="/p", body=b
    )


# --- kind 9: replays respect tenancy -------------------------------------------------------------------------


@pytest.fixture
def partner_keys(make_key, policy):
    """Employer 1 (`policy`) and employer 2 of one partner; a key bound to each and a platform key."""
    second = PolicyFactory(employer__partner=policy.employer.partner)
    partner = policy.employer.partner
    return (
        make_key(partner=partner, employers=[policy.employer]),
        make_key(partner=partner, employers=[second.employer]),
        make_key(partner=partner, all_employers=True),
    )


def test_a_replay_is_only_for_a_key_that_may_see_the_stored_response(policy, partner_keys):
    first_key, second_key, platform_key = partner_keys
    body = addition(policy, "T-1", effective=TODAY)
    original = first_key.post("/api/v1/endorsements", body, HTTP_IDEMPOTENCY_KEY="shared-1")
    assert original.status_code == 202

    foreign = second_key.post("/api/v1/endorsements", body, HTTP_IDEMPOTENCY_KEY="shared-1")
    platform = platform_key.post("/api/v1/endorsements", body, HTTP_IDEMPOTENCY_KEY="shared-1")

    assert foreign.status_code == 404, foreign.content  # handled as its own request: not this key's employer
    assert "Idempotent-Replayed" not in foreign
    body = foreign.json()
    assert "id" not in body  # a problem, not the stored endorsement
    assert body["status"] == 404
    assert original.json()["id"] not in [v for v in body.values() if isinstance(v, int) and v != 404]
    assert platform.status_code == 202
    assert platform["Idempotent-Replayed"] == "true"
    assert platform.json() == original.json()
    assert Endorsement.objects.count() == 1
    assert IdempotencyRecord.objects.get(key="shared-1").response_body == json.dumps(original.json())


def test_a_batch_replay_is_only_for_a_key_that_may_see_it(policy, partner_keys):
    first_key, second_key, _ = partner_keys
    content = _csv([_csv_row("T-1")])

    original = send_csv(first_key, policy, content, "shared-2")
    foreign = send_csv(second_key, policy, content, "shared-2")

    assert original.status_code == 202
    assert foreign.status_code == 404
    assert "Idempotent-Replayed" not in foreign
    assert EndorsementBatch.objects.count() == 1
