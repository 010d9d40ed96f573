"""RestGateway status handling and the rate limiter, with the insurer mocked at the HTTP layer (responses)."""

from __future__ import annotations

import pytest
import requests
import responses
from responses import matchers

from apps.audit.models import InsurerExchangeEvent
from apps.employers.tests.factories import InsurerFactory
from apps.insurers.contracts import ProtocolNotSupportedError, TransientInsurerError
from apps.insurers.gateways import gateway_for
from apps.insurers.gateways.rest import RestGateway, batch_idempotency_key, parse_retry_after
from apps.insurers.models import Insurer, InsurerProtocol, InsurerSubmission
from apps.insurers.services import insurer_submit

BASE = "https://insurer.example/api"
BATCH = f"{BASE}/endorsements/batch"


@pytest.fixture
def insurer(db) -> Insurer:
    return InsurerFactory(code="acme-life", protocol=InsurerProtocol.REST, endpoint=BASE)


def _ok(submissions):
    return {
        "results": [
            {"idempotency_key": s.idempotency_key, "outcome": "confirmed", "insurer_reference": f"R{i}"}
            for i, s in enumerate(submissions)
        ]
    }


@responses.activate
@pytest.mark.django_db
def test_timeout_is_transient_and_logged(insurer, make_submission) -> None:
    responses.post(BATCH, body=requests.ReadTimeout("read timed out"))
    submission = make_submission()

    with pytest.raises(TransientInsurerError) as caught:
        RestGateway(insurer_code="acme-life", endpoint=BASE).submit([submission])

    assert caught.value.retry_after is None
    exchange = InsurerExchangeEvent.objects.get()
    assert exchange.response_status is None
    assert exchange.error.startswith("timeout")
    assert exchange.endorsement_id == submission.endorsement_id


@responses.activate
@pytest.mark.django_db
def test_connect_timeout_and_connection_errors_are_transient(insurer, make_submission) -> None:
    responses.post(BATCH, body=requests.ConnectTimeout("connect timed out"))
    responses.post(BATCH, body=requests.ConnectionError("refused"))
    gateway = RestGateway(insurer_code="acme-life", endpoint=BASE)

    for _ in range(2):
        with pytest.raises(TransientInsurerError):
            gateway.submit([make_submission()])


@responses.activate
@pytest.mark.django_db
def test_requests_carry_idempotency_key_and_timeouts(insurer, make_submission, settings) -> None:
    settings.INSURER_GATEWAY = {"CONNECT_TIMEOUT_SECONDS": 1.5, "READ_TIMEOUT_SECONDS": 4}
    one = make_submission()
    two = [make_submission(), make_submission()]
    responses.post(BATCH, json=_ok([one]), match=[matchers.header_matcher({"Idempotency-Key": one.idempotency_key})])
    responses.post(
        BATCH, json=_ok(two), match=[matchers.header_matcher({"Idempotency-Key": batch_idempotency_key(two)})]
    )
    gateway = RestGateway(insurer_code="acme-life", endpoint=BASE)

    assert gateway.submit([one])[0].insurer_reference == "R0"
    assert [r.insurer_reference for r in gateway.submit(two)] == ["R0", "R1"]
    assert gateway.timeout == (1.5, 4.0)
    assert batch_idempotency_key(two) == batch_idempotency_key(list(reversed(two)))


@pytest.mark.parametrize(("status", "retry_after"), [(429, "7"), (503, "2"), (502, None), (401, None), (404, None)])
@responses.activate
@pytest.mark.django_db
def test_unavailable_statuses_are_transient_honouring_retry_after(
    insurer, make_submission, status, retry_after
) -> None:
    headers = {"Retry-After": retry_after} if retry_after else {}
    responses.post(BATCH, json={"detail": "busy"}, status=status, headers=headers)

    with pytest.raises(TransientInsurerError) as caught:
        RestGateway(insurer_code="acme-life", endpoint=BASE).submit([make_submission()])

    assert caught.value.retry_after == (float(retry_after) if retry_after else None)
    assert InsurerExchangeEvent.objects.get().response_status == status


@responses.activate
@pytest.mark.django_db
def test_request_refused_as_such_rejects_every_item_with_the_classified_message(insurer, make_submission) -> None:
    responses.post(BATCH, json={"detail": "Policy number does not match the employer"}, status=422)
    submissions = [make_submission(), make_submission()]

    results = RestGateway(insurer_code="acme-life", endpoint=BASE).submit(submissions)

    assert [(r.outcome, r.rejection_class) for r in results] == [("rejected", "data_mismatch")] * 2
    assert results[0].rejection_reason == "Policy number does not match the employer"


@responses.activate
@pytest.mark.django_db
def test_incomplete_or_unreadable_answers_are_transient(insurer, make_submission) -> None:
    a, b = make_submission(), make_submission()
    responses.post(BATCH, json=_ok([a]))  # b missing
    responses.post(BATCH, body="<html>oops</html>", status=200)
    gateway = RestGateway(insurer_code="acme-life", endpoint=BASE)

    for _ in range(2):
        with pytest.raises(TransientInsurerError):
            gateway.submit([a, b])


@responses.activate
@pytest.mark.django_db
def test_per_item_rejections_are_classified(insurer, make_submission) -> None:
    a, b = make_submission(), make_submission()
    responses.post(
        BATCH,
        json={
            "results": [
                {"idempotency_key": a.idempotency_key, "outcome": "rejected", "reason": "Member already exists"},
                {"idempotency_key": b.idempotency_key, "outcome": "rejected", "reason": "KYC document pending"},
            ]
        },
    )

    results = RestGateway(insurer_code="acme-life", endpoint=BASE).submit([a, b])

    assert [r.rejection_class for r in results] == ["duplicate_member", "documents_required"]


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


@responses.activate
@pytest.mark.django_db(transaction=True)
def test_rate_limit_refuses_the_call_after_n_per_minute_without_calling_out(insurer, make_submission) -> None:
    Insurer.objects.filter(pk=insurer.pk).update(rate_limit_per_minute=3)
    submissions = [make_submission() for _ in range(4)]
    responses.post(
        BATCH,
        json={"results": [{"idempotency_key": s.idempotency_key, "outcome": "confirmed"} for s in submissions]},
    )

    for submission in submissions[:3]:
        assert insurer_submit(insurer_code="acme-life", submissions=[submission])[0].outcome == "confirmed"
    with pytest.raises(TransientInsurerError) as caught:
        insurer_submit(insurer_code="acme-life", submissions=[submissions[3]])

    assert caught.value.retry_after is not None
    assert 0 < caught.value.retry_after <= 60
    assert len(responses.calls) == 3
    assert not InsurerSubmission.objects.filter(idempotency_key=submissions[3].idempotency_key).exists()


@responses.activate
@pytest.mark.django_db(transaction=True)
def test_rate_limit_without_redis_uses_the_cache(insurer, make_submission, settings) -> None:
    settings.REDIS_URL = ""
    Insurer.objects.filter(pk=insurer.pk).update(rate_limit_per_minute=2)
    submissions = [make_submission() for _ in range(3)]
    responses.post(
        BATCH,
        json={"results": [{"idempotency_key": s.idempotency_key, "outcome": "confirmed"} for s in submissions]},
    )

    insurer_submit(insurer_code="acme-life", submissions=[submissions[0]])
    insurer_submit(insurer_code="acme-life", submissions=[submissions[1]])
    with pytest.raises(TransientInsurerError) as caught:
        insurer_submit(insurer_code="acme-life", submissions=[submissions[2]])

    assert caught.value.retry_after is not None
    assert caught.value.retry_after > 0
    assert len(responses.calls) == 2


@pytest.mark.django_db
@pytest.mark.parametrize("protocol", [*InsurerProtocol.values, "fax"])
def test_every_protocol_without_its_configuration_is_a_configuration_error_naming_the_insurer(protocol) -> None:
    """Generated from the protocol list: an insurer with nothing configured cannot get a gateway, and the error
    says which insurer and what is missing (SPEC §8 class `configuration`); unknown protocols say so too."""
    from apps.insurers.contracts import InsurerConfigurationError

    insurer = InsurerFactory(code="bare", protocol=protocol)

    expected = ProtocolNotSupportedError if protocol == "fax" else InsurerConfigurationError
    with pytest.raises(expected, match="'bare'") as caught:
        gateway_for(insurer)
    assert any(word in str(caught.value) for word in ("endpoint", "service address", "folder", "no gateway adapter"))
