"""SoapGateway (zeep) and insurer_submit against the sandbox insurer's SOAP face over real HTTP (live_server):
the same outcomes, idempotency ledger, retry classification and exchange log as REST (ADR 0027)."""

from __future__ import annotations

import json
from datetime import date

import pytest
import requests
from lxml import etree

from apps.audit.models import InsurerExchangeEvent
from apps.insurers.contracts import RejectionClass, SubmissionResult, TransientInsurerError
from apps.insurers.models import InsurerSubmission, SubmissionState
from apps.insurers.sandbox.models import SandboxApplied
from apps.insurers.sandbox.service import sandbox_configure
from apps.insurers.sandbox.setup import SANDBOX_SOAP_CODE, sandbox_register
from apps.insurers.services import insurer_circuit_state, insurer_submit

pytestmark = pytest.mark.django_db(transaction=True)
CODE = SANDBOX_SOAP_CODE


@pytest.fixture
def soap_insurer(live_server):
    (insurer,) = sandbox_register(base_url=live_server.url, codes=(CODE,))
    return insurer


def test_soap_sandbox_confirms_with_references_and_rejects_over_65(soap_insurer, make_submission) -> None:
    ok = [make_submission(), make_submission(kind="deletion"), make_submission(kind="correction")]
    aged_66 = make_submission(date_of_birth=date(1960, 3, 31), effective_date=date(2026, 4, 1))

    results = insurer_submit(insurer_code=CODE, submissions=[*ok, aged_66])

    applied = {a.idempotency_key: a for a in SandboxApplied.objects.filter(code=CODE)}
    assert results[:3] == [
        SubmissionResult(
            endorsement_id=s.endorsement_id,
            outcome="confirmed",
            insurer_reference=f"SBX-{applied[s.idempotency_key].pk}",
        )
        for s in ok
    ]
    assert results[3] == SubmissionResult(
        endorsement_id=aged_66.endorsement_id,
        outcome="rejected",
        rejection_class=RejectionClass.AGE_LIMIT,
        rejection_reason="Member age exceeds 65",
    )
    log = dict(InsurerSubmission.objects.values_list("idempotency_key", "last_outcome"))
    assert log == {**{s.idempotency_key: "confirmed" for s in ok}, aged_66.idempotency_key: "rejected"}


def test_soap_same_key_is_applied_once(soap_insurer, make_submission) -> None:
    submission = make_submission()

    first = insurer_submit(insurer_code=CODE, submissions=[submission])
    second = insurer_submit(insurer_code=CODE, submissions=[submission])

    assert first == second
    assert SandboxApplied.objects.get(code=CODE).times_seen == 2


def test_soap_failure_is_transient_with_retry_after_and_feeds_the_circuit(soap_insurer, make_submission) -> None:
    sandbox_configure(code=CODE, failure_rate=1.0)
    submission = make_submission()

    with pytest.raises(TransientInsurerError) as caught:
        insurer_submit(insurer_code=CODE, submissions=[submission])

    assert caught.value.retry_after == 1.0
    assert not SandboxApplied.objects.exists()
    assert InsurerSubmission.objects.get().last_outcome == SubmissionState.TRANSIENT_ERROR
    exchange = InsurerExchangeEvent.objects.get()
    assert (exchange.response_status, exchange.insurer_code) == (503, CODE)
    assert insurer_circuit_state(CODE)["failure_count"] == 1


def test_unreachable_soap_endpoint_is_transient(soap_insurer, make_submission) -> None:
    soap_insurer.endpoint = "http://127.0.0.1:9/soap"
    soap_insurer.save(update_fields=["endpoint"])

    with pytest.raises(TransientInsurerError, match="unreachable"):
        insurer_submit(insurer_code=CODE, submissions=[make_submission()])

    assert InsurerExchangeEvent.objects.get().error.startswith("connection error")


def test_soap_exchange_log_redacts_personal_data(soap_insurer, make_submission) -> None:
    submissions = [make_submission(), make_submission()]

    insurer_submit(insurer_code=CODE, submissions=submissions)

    exchange = InsurerExchangeEvent.objects.get()
    assert (exchange.operation, exchange.response_status) == ("endorsements.submit", 200)
    assert exchange.endpoint.endswith(f"/sandbox/{CODE}/soap")
    stored = exchange.request_body + exchange.response_body
    for secret in ("asha.verma@example.com", "Asha", "Verma", "1990-05-17"):
        assert secret not in stored
    assert [e["endorsement_id"] for e in json.loads(exchange.request_body)["endorsements"]] == [
        s.endorsement_id for s in submissions
    ]
    assert {r["outcome"] for r in json.loads(exchange.response_body)["results"]} == {"confirmed"}


def test_soap_callback_mode_answers_pending_then_signed_callbacks(soap_insurer, make_submission) -> None:
    from apps.insurers.sandbox.callbacks import wait_for_callbacks
    from apps.outbox.models import OutboxMessage

    sandbox_configure(code=CODE, mode="callback")
    ok, too_old = make_submission(), make_submission(date_of_birth=date(1950, 1, 1))

    results = insurer_submit(insurer_code=CODE, submissions=[ok, too_old])

    assert [r.outcome for r in results] == ["pending", "pending"]
    assert wait_for_callbacks(timeout=15)
    payloads = {
        m.payload["endorsement_id"]: m.payload for m in OutboxMessage.objects.filter(topic="insurer.result_received")
    }
    assert payloads[ok.endorsement_id]["outcome"] == "confirmed"
    assert (payloads[too_old.endorsement_id]["outcome"], payloads[too_old.endorsement_id]["rejection_class"]) == (
        "rejected",
        "age_limit",
    )


def test_wsdl_is_served_with_this_deployments_address(soap_insurer, live_server) -> None:
    response = requests.get(f"{live_server.url}/sandbox/{CODE}/soap?wsdl", timeout=5)

    assert response.status_code == 200
    root = etree.fromstring(response.content)
    [address] = root.iter("{http://schemas.xmlsoap.org/wsdl/soap/}address")
    assert address.get("location") == f"{live_server.url}/sandbox/{CODE}/soap"
    assert root.get("targetNamespace") == "urn:keel:insurer:endorsements:v1"


ENVELOPE = (
    '<?xml version="1.0"?>{doctype}<soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:k="urn:keel:insurer:endorsements:v1"><soap:Body><k:SubmitEndorsementsRequest>{body}'
    "</k:SubmitEndorsementsRequest></soap:Body></soap:Envelope>"
)


@pytest.mark.parametrize(
    ("doctype", "body", "expected"),
    [
        ("", "", "schema validation failed"),  # no endorsement at all
        ("", "<k:endorsement><k:idempotencyKey>x</k:idempotencyKey></k:endorsement>", "schema validation failed"),
        ('<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>', "&e;", "DTDs are not accepted"),
    ],
)
def test_invalid_soap_requests_get_a_client_fault_and_change_nothing(
    soap_insurer, live_server, doctype, body, expected
):
    response = requests.post(
        f"{live_server.url}/sandbox/{CODE}/soap",
        data=ENVELOPE.format(doctype=doctype, body=body).encode(),
        headers={"Content-Type": "text/xml"},
        timeout=5,
    )

    assert response.status_code == 500
    fault = etree.fromstring(response.content).find(".//{http://schemas.xmlsoap.org/soap/envelope/}Fault")
    assert fault.findtext("faultcode") == "soap:Client"
    assert expected in fault.findtext("faultstring")
    assert not SandboxApplied.objects.exists()


def test_a_client_fault_rejects_the_batch_with_the_classified_message(soap_insurer, make_submission, monkeypatch):
    """An insurer that refuses the request as such (SOAP Client fault) rejects every item, like REST's 4xx."""
    from apps.insurers.sandbox import views

    def refuse(config, raw_items):
        from apps.insurers.sandbox.engine import SandboxInputError

        raise SandboxInputError("Member data mismatch on policy")

    monkeypatch.setattr(views, "_apply", refuse)
    submissions = [make_submission(), make_submission()]

    results = insurer_submit(insurer_code=CODE, submissions=submissions)

    assert {(r.outcome, r.rejection_class) for r in results} == {("rejected", "data_mismatch")}
    assert all("mismatch" in (r.rejection_reason or "") for r in results)
