"""The whole pipeline: API → outbox → scoring → decision → decided event (SPEC §9, §3)."""

from __future__ import annotations

import logging
import threading
import uuid

import pytest
from django.db import connection, connections

from apps.audit.models import AuditEvent, PiiAccessEvent
from apps.common.actors import Actor
from apps.loan_applications import services
from apps.loan_applications.bureau import BureauError, id_variation
from apps.loan_applications.handlers import decision_step, scoring_step
from apps.loan_applications.models import CreditReport, LoanApplication, LoanDecision, LoanStatus
from apps.loan_applications.rules import RULE_SET_VERSION, DecisionInputs
from apps.loan_applications.tests.factories import LoanApplicationPayloadFactory, create_application, unique_pan
from apps.outbox.models import OutboxMessage, OutboxStatus
from apps.outbox.relay import relay_once
from apps.outbox.tasks import deliver_envelope
from apps.outbox.testing import drain

URL = "/api/v1/loan-applications"


def relay_collect() -> list:
    collected: list = []

    # The outbox's fake-publisher signature is `publish(message, queue)`; older revisions passed a batch.
    def publish(*args):
        if len(args) == 2:
            collected.append(args[0])
            return None
        collected.extend(m for m, _ in args[0])
        return len(args[0])

    relay_once(publish=publish)
    return collected


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("pan", "income", "requested", "loan_type", "status", "reasons", "max_amount"),
    [
        ("ABCDE1234F", "75000.00", "500000.00", "PERSONAL", "PRE_APPROVED", [], "3600000.00"),
        ("FGHIJ5678K", "75000.00", "500000.00", "PERSONAL", "REJECTED", ["CREDIT_SCORE_BELOW_THRESHOLD"], None),
        ("KLMNP4321Q", "80000.00", "5000000.00", "HOME", "MANUAL_REVIEW", ["INCOME_TO_LOAN_RATIO"], "3840000.00"),
    ],
)
def test_application_is_scored_and_decided_end_to_end(
    loans, pan, income, requested, loan_type, status, reasons, max_amount
):
    payload = LoanApplicationPayloadFactory(
        pan_number=pan, monthly_income=income, requested_amount=requested, loan_type=loan_type
    )
    application_id = loans.post(URL, payload).json()["id"]

    delivered = drain()

    assert [m.topic for m in delivered] == [
        "loan_application.submitted", "loan_application.scored", "loan_application.decided",
    ]  # fmt: skip
    expected_score = {"ABCDE1234F": 790, "FGHIJ5678K": 610}.get(
        pan, 650 + 40 + 10 + id_variation(uuid.UUID(application_id))
    )
    body = loans.get(f"{URL}/{application_id}").json()
    assert body["status"] == status
    assert body["credit_score"] == expected_score
    assert body["decision_reasons"] == reasons
    assert body["max_approved_amount"] == max_amount
    assert body["decided_at"] is not None
    assert body["pan_masked"] == "XXXXX" + pan[-5:]
    application = LoanApplication.objects.get(pk=application_id)
    assert application.version == 2
    assert application.rule_set_version == RULE_SET_VERSION
    inputs = DecisionInputs(
        credit_score=expected_score,
        monthly_income=application.monthly_income,
        requested_amount=application.requested_amount,
        loan_type=loan_type,
    )
    assert application.decision_input_hash == inputs.sha256()
    decision = LoanDecision.objects.get(application=application)
    assert (decision.kind, decision.status, decision.inputs) == ("AUTOMATED", status, inputs.canonical())
    assert CreditReport.objects.get(application=application).score == expected_score
    decided = OutboxMessage.objects.get(topic="loan_application.decided")
    assert decided.payload["status"] == status
    assert decided.payload["application_id"] == application_id
    assert pan not in str(decided.payload)
    assert OutboxMessage.objects.exclude(status=OutboxStatus.DONE).count() == 0
    decrypts = PiiAccessEvent.objects.filter(subject_id=application_id, action="decrypt")
    assert list(decrypts.values_list("actor", "purpose")) == [
        ("system:loan_applications.scoring", "credit bureau soft pull")
    ]


@pytest.mark.django_db
def test_same_message_delivered_twice_is_processed_once(partner):
    application = create_application(partner=partner)
    submitted = relay_collect()
    assert [m.topic for m in submitted] == ["loan_application.submitted"]

    deliver_envelope(submitted[0].to_envelope())
    deliver_envelope(submitted[0].to_envelope())

    application.refresh_from_db()
    assert application.version == 1
    assert CreditReport.objects.filter(application=application).count() == 1
    assert OutboxMessage.objects.filter(topic="loan_application.scored").count() == 1
    assert AuditEvent.objects.filter(action="loan_application.scored").count() == 1
    # The decision message too.
    scored = relay_collect()
    for _ in range(2):
        deliver_envelope(scored[0].to_envelope())
    application.refresh_from_db()
    assert application.version == 2
    assert LoanDecision.objects.filter(application=application).count() == 1
    assert OutboxMessage.objects.filter(topic="loan_application.decided").count() == 1


@pytest.mark.django_db
def test_redelivery_after_inbox_commit_does_not_call_the_bureau_again(partner, monkeypatch):
    application = create_application(partner=partner)
    submitted = relay_collect()
    deliver_envelope(submitted[0].to_envelope())
    # Scored already: the state check stops the step before any decrypt or bureau call.
    calls = []
    monkeypatch.setattr("apps.loan_applications.handlers.default_bureau", lambda: calls.append(1))

    scoring_step(application_id=application.pk, message=submitted[0])

    assert calls == []
    assert PiiAccessEvent.objects.filter(subject_id=str(application.pk), action="decrypt").count() == 1


@pytest.mark.django_db
def test_bureau_outage_reschedules_the_step_and_changes_nothing(partner, monkeypatch):
    application = create_application(partner=partner)

    class Down:
        name = "down"
        calls = 0

        def soft_pull(self, request):
            Down.calls += 1
            raise BureauError("503")

    monkeypatch.setattr("apps.loan_applications.handlers.default_bureau", Down)
    monkeypatch.setattr("apps.loan_applications.bureau.time.sleep", lambda s: None)
    submitted = relay_collect()

    deliver_envelope(submitted[0].to_envelope())

    assert Down.calls == 3
    row = OutboxMessage.objects.get(pk=submitted[0].id)
    assert (row.status, row.attempts) == (OutboxStatus.PENDING, 1)
    assert "BureauUnavailable" in row.last_error or "RetryLater" in row.last_error or "bureau" in row.last_error
    application.refresh_from_db()
    assert (application.credit_score, application.version) == (None, 0)
    assert OutboxMessage.objects.filter(topic="loan_application.scored").count() == 0


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_two_concurrent_decision_attempts_exactly_one_wins(require_postgres, partner, monkeypatch):
    application = create_application(partner=partner, pan="KLMNP4321Q")
    scoring_step(application_id=application.pk)
    barrier = threading.Barrier(2, timeout=10)
    real_decide = services.decide

    def decide_after_both_have_read(inputs):
        barrier.wait()  # both attempts have read version 1 before either writes
        return real_decide(inputs)

    monkeypatch.setattr(services, "decide", decide_after_both_have_read)
    results: list = []
    errors: list = []

    def attempt(n: int) -> None:
        try:
            results.append(services.loan_application_decide(application_id=application.pk, actor=Actor.system(f"t{n}")))
        except Exception as exc:  # pragma: no cover — surfaced by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=attempt, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert sum(r is not None for r in results) == 1
    application.refresh_from_db()
    assert application.version == 2
    assert application.status != LoanStatus.PENDING
    assert LoanDecision.objects.filter(application=application).count() == 1
    assert OutboxMessage.objects.filter(topic="loan_application.decided").count() == 1
    assert AuditEvent.objects.filter(action="loan_application.decided").count() == 1
    winner = next(r for r in results if r is not None)
    assert application.decided_by == winner.decided_by


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_concurrent_submissions_of_one_pan_create_exactly_one(require_postgres, loans):
    payload = LoanApplicationPayloadFactory(pan_number="KLMNP4321Q")
    barrier = threading.Barrier(4, timeout=10)
    statuses: list[int] = []

    def submit() -> None:
        try:
            barrier.wait()
            statuses.append(loans.post(URL, payload).status_code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sorted(statuses) == [202, 409, 409, 409]
    assert LoanApplication.objects.count() == 1
    assert OutboxMessage.objects.filter(topic="loan_application.submitted").count() == 1


@pytest.mark.django_db
def test_manual_review_decided_by_an_operator(partner):
    application = create_application(partner=partner, pan="KLMNP4321Q", monthly_income=8_000_000,
                                      requested_amount=500_000_000, loan_type="HOME")  # fmt: skip
    scoring_step(application_id=application.pk)
    decision_step(application_id=application.pk)
    application.refresh_from_db()
    assert application.status == LoanStatus.MANUAL_REVIEW
    operator = Actor.operator(user_id=1, username="ops-ravi")

    decision = services.loan_application_decide_manually(
        application=application, approve=True, reason="Salary slips verified", actor=operator
    )

    application.refresh_from_db()
    assert application.status == LoanStatus.PRE_APPROVED
    assert application.decision_reasons == ["INCOME_TO_LOAN_RATIO", "MANUAL_APPROVED"]
    assert application.max_approved_amount == 8_000_000 * 48
    assert application.decided_by == "user:ops-ravi"
    assert application.version == 3
    assert (decision.kind, decision.note) == ("MANUAL", "Salary slips verified")
    event = AuditEvent.objects.get(action="loan_application.decided_manually")
    assert event.actor == "user:ops-ravi"
    assert event.after["reason"] == "Salary slips verified"
    assert OutboxMessage.objects.filter(topic="loan_application.decided").count() == 2
    # Deciding again (a stale second operator) is refused and changes nothing.
    stale = LoanApplication.objects.get(pk=application.pk)
    with pytest.raises(services.Conflict):
        services.loan_application_decide_manually(application=stale, approve=False, reason="no", actor=operator)
    assert LoanDecision.objects.filter(application=application).count() == 2


@pytest.mark.django_db
def test_manual_decision_needs_a_reason_and_a_review_state(partner):
    application = create_application(partner=partner, pan="ABCDE1234F")
    with pytest.raises(services.DomainValidationError):
        services.loan_application_decide_manually(
            application=application, approve=True, reason="  ", actor=Actor.system("t")
        )
    with pytest.raises(services.Conflict):
        services.loan_application_decide_manually(
            application=application, approve=True, reason="ok", actor=Actor.system("t")
        )
    assert LoanDecision.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.slow
def test_two_hundred_applications_all_reach_a_final_status(loans):
    ids = []
    for _ in range(200):
        response = loans.post(URL, LoanApplicationPayloadFactory(pan_number=unique_pan()))
        assert response.status_code == 202, response.content
        ids.append(response.json()["id"])

    delivered = drain()

    assert len(delivered) == 600
    statuses = dict(LoanApplication.objects.filter(pk__in=ids).values_list("id", "status"))
    assert len(statuses) == 200
    assert set(statuses.values()) <= {"PRE_APPROVED", "REJECTED", "MANUAL_REVIEW"}
    assert LoanDecision.objects.count() == 200
    assert OutboxMessage.objects.filter(topic="loan_application.decided").count() == 200
    assert OutboxMessage.objects.exclude(status=OutboxStatus.DONE).count() == 0


PAN = "QWERT6789Y"


def _text_columns():
    with connection.cursor() as cursor:
        cursor.execute(
            """
            SELECT table_name, column_name, data_type FROM information_schema.columns
            WHERE table_schema = current_schema()
              AND data_type IN ('text', 'character varying', 'character', 'json', 'jsonb', 'bytea')
            """
        )
        return cursor.fetchall()


@pytest.mark.django_db
@pytest.mark.postgres
def test_pan_plaintext_is_absent_from_database_logs_and_responses(require_postgres, loans, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    bodies = []
    response = loans.post(URL, LoanApplicationPayloadFactory(pan_number=PAN), HTTP_IDEMPOTENCY_KEY="pan-scan")
    bodies.append(response.content)
    application_id = response.json()["id"]
    bodies.append(loans.post(URL, LoanApplicationPayloadFactory(pan_number=PAN)).content)  # 409
    bodies.append(loans.post(URL, LoanApplicationPayloadFactory(pan_number=PAN[:-1] + "1")).content)  # 422
    drain()
    bodies.append(loans.get(f"{URL}/{application_id}").content)
    bodies.append(loans.get(URL).content)

    for body in bodies:
        assert PAN.encode() not in body
    columns = _text_columns()
    assert ("loan_applications_loanapplication", "pan_ciphertext", "bytea") in columns
    with connection.cursor() as cursor:
        for table, column, data_type in columns:
            if data_type == "bytea":
                cursor.execute(
                    f'SELECT count(*) FROM "{table}" WHERE position(%s::bytea in "{column}") > 0',
                    [PAN.encode()],
                )
            else:
                cursor.execute(
                    f'SELECT count(*) FROM "{table}" WHERE "{column}"::text LIKE %s',
                    [f"%{PAN}%"],
                )
            assert cursor.fetchone()[0] == 0, f"{table}.{column} contains the PAN"
    captured = capfd.readouterr()
    assert PAN not in captured.out + captured.err
    for record in caplog.records:
        assert PAN not in record.getMessage()
        assert PAN not in str(record.__dict__)
    assert len(caplog.records) > 0
    assert PiiAccessEvent.objects.filter(subject_id=application_id, action="decrypt").count() == 1
    assert PiiAccessEvent.objects.filter(subject_id=application_id, action="mask").count() == 2
