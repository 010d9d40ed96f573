"""RestGateway and insurer_submit against the sandbox insurer over real HTTP (live_server)."""

from __future__ import annotations

import json
import time
from datetime import date, timedelta

import pytest
import time_machine
from django.utils import timezone

from apps.audit.models import InsurerExchangeEvent
from apps.insurers.contracts import RejectionClass, SubmissionResult, TransientInsurerError
from apps.insurers.models import InsurerSubmission, SubmissionState
from apps.insurers.sandbox.models import SandboxApplied
from apps.insurers.sandbox.service import sandbox_configure
from apps.insurers.services import insurer_circuit_state, insurer_submit

pytestmark = pytest.mark.django_db(transaction=True)


def test_sandbox_confirms_endorsements_with_references(sandbox_insurer, make_submission) -> None:
    submissions = [make_submission(), make_submission(kind="deletion"), make_submission(kind="correction")]

    results = insurer_submit(insurer_code="sandbox-rest", submissions=submissions)

    assert [r.outcome for r in results] == ["confirmed"] * 3
    assert [r.endorsement_id for r in results] == [s.endorsement_id for s in submissions]
    applied = {a.idempotency_key: a for a in SandboxApplied.objects.all()}
    for submission, result in zip(submissions, results, strict=True):
        row = applied[submission.idempotency_key]
        assert result.insurer_reference == f"SBX-{row.pk}" == row.insurer_reference
        assert result.rejection_class is None
    log = {s.idempotency_key: s for s in InsurerSubmission.objects.all()}
    assert {s.last_outcome for s in log.values()} == {SubmissionState.CONFIRMED}
    assert all(s.attempts == 1 and s.insurer_id == sandbox_insurer.pk for s in log.values())


def test_addition_for_member_over_65_is_rejected_age_limit(sandbox_insurer, make_submission) -> None:
    effective = date(2026, 4, 1)
    aged_66 = make_submission(date_of_birth=date(1960, 3, 31), effective_date=effective)
    aged_65 = make_submission(date_of_birth=date(1960, 4, 2), effective_date=effective)
    deletion_aged_66 = make_submission(kind="deletion", date_of_birth=date(1960, 3, 31), effective_date=effective)

    results = insurer_submit(insurer_code="sandbox-rest", submissions=[aged_66, aged_65, deletion_aged_66])

    assert results[0] == SubmissionResult(
        endorsement_id=aged_66.endorsement_id,
        outcome="rejected",
        rejection_class=RejectionClass.AGE_LIMIT,
        rejection_reason="Member age exceeds 65",
    )
    assert results[1].outcome == "confirmed"
    assert results[2].outcome == "confirmed"
    row = InsurerSubmission.objects.get(idempotency_key=aged_66.idempotency_key)
    assert (row.last_outcome, row.rejection_class) == (SubmissionState.REJECTED, "age_limit")


def test_same_idempotency_key_is_applied_once(sandbox_insurer, make_submission) -> None:
    submission = make_submission()

    first = insurer_submit(insurer_code="sandbox-rest", submissions=[submission])
    second = insurer_submit(insurer_code="sandbox-rest", submissions=[submission])

    assert first == second
    applied = SandboxApplied.objects.get()
    assert applied.idempotency_key == submission.idempotency_key
    assert applied.times_seen == 2
    assert InsurerSubmission.objects.get().attempts == 2


def test_failing_insurer_raises_transient_with_retry_after(sandbox_insurer, make_submission) -> None:
    sandbox_configure(code="sandbox-rest", failure_rate=1.0)
    submission = make_submission()

    with pytest.raises(TransientInsurerError) as caught:
        insurer_submit(insurer_code="sandbox-rest", submissions=[submission])

    assert caught.value.retry_after == 1.0
    assert not SandboxApplied.objects.exists()
    row = InsurerSubmission.objects.get()
    assert row.last_outcome == SubmissionState.TRANSIENT_ERROR
    exchange = InsurerExchangeEvent.objects.get()
    assert (exchange.response_status, exchange.direction, exchange.endorsement_id) == (
        503,
        "outbound",
        submission.endorsement_id,
    )


def test_circuit_opens_after_five_failures_fails_fast_and_recovers(
    sandbox_insurer, make_submission, make_key, django_db_blocker
) -> None:
    from apps.partners.models import Scope
    from apps.partners.tests.factories import PartnerFactory

    client = make_key(partner=PartnerFactory(), scopes=[Scope.EMPLOYERS_READ], all_employers=True)
    sandbox_configure(code="sandbox-rest", failure_rate=1.0)
    submission = make_submission()
    start = timezone.now()

    with time_machine.travel(start, tick=True) as traveller:
        for _ in range(5):
            with pytest.raises(TransientInsurerError):
                insurer_submit(insurer_code="sandbox-rest", submissions=[submission])
        state = insurer_circuit_state("sandbox-rest")
        assert state["state"] == "open"
        assert state["failure_count"] == 5
        body = client.get("/api/v1/insurers/sandbox-rest/circuit").json()
        assert body["insurer"] == "sandbox-rest"
        assert body["state"] == "open"
        assert body["failure_count"] == 5
        assert body["opened_at"] is not None
        calls_while_closed = InsurerExchangeEvent.objects.count()
        assert calls_while_closed == 5

        # Open: fail fast, nothing sent.
        with pytest.raises(TransientInsurerError) as caught:
            insurer_submit(insurer_code="sandbox-rest", submissions=[submission])
        assert 0 < caught.value.retry_after <= 30
        assert InsurerExchangeEvent.objects.count() == calls_while_closed

        # After the reset timeout the next call is a trial; the insurer has recovered.
        traveller.shift(timedelta(seconds=31))
        assert insurer_circuit_state("sandbox-rest")["state"] == "half_open"
        sandbox_configure(code="sandbox-rest", failure_rate=0.0)
        results = insurer_submit(insurer_code="sandbox-rest", submissions=[submission])

        assert results[0].outcome == "confirmed"
        # One successful probe of the two HALF_OPEN_SUCCESSES: still half-open, traffic comes back gradually.
        assert insurer_circuit_state("sandbox-rest")["state"] == "half_open"
        insurer_submit(insurer_code="sandbox-rest", submissions=[submission])
        assert insurer_circuit_state("sandbox-rest") == {"state": "closed", "failure_count": 0, "opened_at": None}
        assert client.get("/api/v1/insurers/sandbox-rest/circuit").json()["state"] == "closed"


def test_failed_trial_call_reopens_the_circuit(sandbox_insurer, make_submission) -> None:
    sandbox_configure(code="sandbox-rest", failure_rate=1.0)
    submission = make_submission()
    with time_machine.travel(timezone.now(), tick=True) as traveller:
        for _ in range(5):
            with pytest.raises(TransientInsurerError):
                insurer_submit(insurer_code="sandbox-rest", submissions=[submission])
        traveller.shift(timedelta(seconds=31))

        with pytest.raises(TransientInsurerError):
            insurer_submit(insurer_code="sandbox-rest", submissions=[submission])

        assert insurer_circuit_state("sandbox-rest")["state"] == "open"
        assert InsurerExchangeEvent.objects.count() == 6


def test_exchange_log_has_every_call_with_personal_data_redacted(sandbox_insurer, make_submission) -> None:
    submissions = [make_submission(), make_submission()]

    insurer_submit(insurer_code="sandbox-rest", submissions=submissions)

    exchange = InsurerExchangeEvent.objects.get()
    assert exchange.insurer_code == "sandbox-rest"
    assert exchange.operation == "endorsements.submit"
    assert exchange.response_status == 200
    assert exchange.endpoint.endswith("/sandbox/sandbox-rest/endorsements/batch")
    stored = exchange.request_body + exchange.response_body
    for secret in ("asha.verma@example.com", "Asha", "Verma", "1990-05-17"):
        assert secret not in stored
    request = json.loads(exchange.request_body)
    assert [e["endorsement_id"] for e in request["endorsements"]] == [s.endorsement_id for s in submissions]


def test_callback_mode_answers_pending_then_delivers_signed_results(sandbox_insurer, make_submission) -> None:
    from apps.insurers.sandbox.callbacks import wait_for_callbacks
    from apps.outbox.models import OutboxMessage

    sandbox_configure(code="sandbox-rest", mode="callback")
    ok = make_submission()
    too_old = make_submission(date_of_birth=date(1950, 1, 1))

    results = insurer_submit(insurer_code="sandbox-rest", submissions=[ok, too_old])

    assert [r.outcome for r in results] == ["pending", "pending"]
    # Wait on the delivery itself, not on time: the callback thread is started by the live server's thread after
    # its transaction commits, and under load its first attempts may be retried (callbacks.MAX_ATTEMPTS).
    deadline = time.monotonic() + 60
    while SandboxApplied.objects.filter(callback_delivered_at__isnull=False).count() < 2:
        assert time.monotonic() < deadline, "the sandbox never delivered both callbacks"
        wait_for_callbacks(timeout=1)
        time.sleep(0.05)
    assert wait_for_callbacks(timeout=15)
    events = {m.payload["endorsement_id"]: m for m in OutboxMessage.objects.filter(topic="insurer.result_received")}
    assert set(events) == {ok.endorsement_id, too_old.endorsement_id}
    assert events[ok.endorsement_id].payload["outcome"] == "confirmed"
    assert events[ok.endorsement_id].payload["insurer_reference"].startswith("SBX-")
    assert events[ok.endorsement_id].key == f"endorsement:{ok.endorsement_id}"
    assert events[too_old.endorsement_id].payload["outcome"] == "rejected"
    assert events[too_old.endorsement_id].payload["rejection_class"] == "age_limit"
    assert SandboxApplied.objects.filter(callback_delivered_at__isnull=False).count() == 2
    assert InsurerExchangeEvent.objects.filter(direction="inbound", response_status=200).count() == 1
    outcomes = dict(InsurerSubmission.objects.values_list("endorsement_id", "last_outcome"))
    assert outcomes == {ok.endorsement_id: "confirmed", too_old.endorsement_id: "rejected"}


def test_batches_are_split_by_insurer_batch_size(sandbox_insurer, make_submission) -> None:
    sandbox_insurer.batch_size = 2
    sandbox_insurer.save(update_fields=["batch_size"])
    submissions = [make_submission() for _ in range(5)]

    results = insurer_submit(insurer_code="sandbox-rest", submissions=submissions)

    assert [r.endorsement_id for r in results] == [s.endorsement_id for s in submissions]
    assert InsurerExchangeEvent.objects.count() == 3
    assert SandboxApplied.objects.count() == 5


def test_insurer_submit_refuses_to_run_inside_a_transaction(sandbox_insurer, make_submission) -> None:
    from django.db import transaction

    with transaction.atomic(), pytest.raises(AssertionError):
        insurer_submit(insurer_code="sandbox-rest", submissions=[make_submission()])
