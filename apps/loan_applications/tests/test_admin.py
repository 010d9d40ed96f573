from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from apps.audit.models import AuditEvent, PiiAccessEvent
from apps.common.actors import Actor
from apps.loan_applications.handlers import decision_step, scoring_step
from apps.loan_applications.models import LoanDecision, LoanStatus
from apps.loan_applications.rules import inputs_sha256
from apps.loan_applications.services import loan_application_decide_manually
from apps.loan_applications.tests.factories import create_application

pytestmark = pytest.mark.django_db
CHANGELIST = "/admin/loan_applications/loanapplication/"


@pytest.fixture
def operator(client):
    user = get_user_model().objects.create_superuser("ops-meera", "ops@keel.example", "pw")
    client.force_login(user)
    return client


def in_review(partner, pan="KLMNP4321Q"):
    application = create_application(partner=partner, pan=pan, monthly_income=8_000_000,
                                      requested_amount=500_000_000, loan_type="HOME")  # fmt: skip
    scoring_step(application_id=application.pk)
    decision_step(application_id=application.pk)
    application.refresh_from_db()
    assert application.status == LoanStatus.MANUAL_REVIEW
    return application


def test_admin_list_shows_masked_pan_only_and_logs_each_mask(operator, partner):
    application = create_application(partner=partner, pan="KLMNP4321Q")

    response = operator.get(CHANGELIST)

    assert response.status_code == 200
    html = response.content.decode()
    assert "XXXXX4321Q" in html
    assert "KLMNP4321Q" not in html
    event = PiiAccessEvent.objects.get(subject_id=str(application.pk))
    assert (event.actor, event.action, event.purpose) == ("user:ops-meera", "mask", "operator admin view")

    detail = operator.get(f"{CHANGELIST}{application.pk}/change/")
    assert detail.status_code == 200
    assert "XXXXX4321Q" in detail.content.decode()
    assert "KLMNP4321Q" not in detail.content.decode()


def test_admin_approve_action_decides_manual_review_with_reason(operator, partner):
    application = in_review(partner)
    pending = create_application(partner=partner, pan="ZZZZZ1111Z")

    response = operator.post(
        CHANGELIST,
        {"action": "approve_selected", "_selected_action": [str(application.pk), str(pending.pk)],
         "reason": "Verified salary slips"},
        follow=True,
    )  # fmt: skip

    assert response.status_code == 200
    application.refresh_from_db()
    pending.refresh_from_db()
    assert application.status == LoanStatus.PRE_APPROVED
    assert application.decided_by == "user:ops-meera"
    assert pending.status == LoanStatus.PENDING
    assert AuditEvent.objects.get(action="loan_application.decided_manually").object_id == str(application.pk)


def test_admin_decline_without_reason_changes_nothing(operator, partner):
    application = in_review(partner)

    operator.post(CHANGELIST, {"action": "decline_selected", "_selected_action": [str(application.pk)], "reason": ""})

    application.refresh_from_db()
    assert application.status == LoanStatus.MANUAL_REVIEW
    assert LoanDecision.objects.filter(application=application).count() == 1


def test_admin_decline_sets_rejected(operator, partner):
    application = in_review(partner)

    operator.post(
        CHANGELIST,
        {"action": "decline_selected", "_selected_action": [str(application.pk)], "reason": "Income not verifiable"},
    )

    application.refresh_from_db()
    assert (application.status, application.max_approved_amount) == (LoanStatus.REJECTED, None)
    assert application.decision_reasons == ["INCOME_TO_LOAN_RATIO", "MANUAL_DECLINED"]


@pytest.mark.parametrize("approve", [True, False])
def test_every_decision_re_hashes_to_its_stored_input_hash(partner, approve):
    """One hash for automated and manual decisions (ADR 0038): re-hashing a stored decision's inputs gives its
    `input_hash`, and the application carries the latest one."""
    application = in_review(partner)

    loan_application_decide_manually(
        application=application, approve=approve, reason="Checked", actor=Actor.system("test")
    )

    application.refresh_from_db()
    automated, manual = LoanDecision.objects.filter(application=application).order_by("created_at", "id")
    assert (automated.kind, manual.kind) == ("AUTOMATED", "MANUAL")
    assert [inputs_sha256(d.inputs) for d in (automated, manual)] == [automated.input_hash, manual.input_hash]
    assert manual.inputs["operator_decision"] == ("APPROVE" if approve else "DECLINE")
    assert application.decision_input_hash == manual.input_hash != automated.input_hash
    assert application.version == 3
