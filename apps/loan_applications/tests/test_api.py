"""Loan applications API (SPEC §9, §2): 202 intake, 422 per field, 409 duplicates, tenancy, scopes."""

from __future__ import annotations

import datetime as dt
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent, PiiAccessEvent
from apps.loan_applications.models import LoanApplication, LoanStatus
from apps.loan_applications.tests.factories import LoanApplicationPayloadFactory, create_application
from apps.outbox.models import OutboxMessage
from apps.partners.models import Scope
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
URL = "/api/v1/loan-applications"


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert set(body) >= {"type", "title", "status", "detail", "instance"}
    return body


def assert_nothing_written() -> None:
    assert LoanApplication.objects.count() == 0
    assert OutboxMessage.objects.filter(topic__startswith="loan_application").count() == 0
    assert AuditEvent.objects.filter(object_type="loan_application").count() == 0


@pytest.fixture
def frozen_today(time_machine):
    time_machine.move_to(dt.datetime(2025, 6, 15, 12, 0, tzinfo=dt.UTC), tick=False)
    return dt.date(2025, 6, 15)


def test_post_returns_202_pending_and_writes_row_audit_and_outbox_in_one_go(loans, partner):
    payload = LoanApplicationPayloadFactory(pan_number="KLMNP4321Q", phone_number="+91 9876543210")

    response = loans.post(URL, payload)

    assert response.status_code == 202, response.content
    body = response.json()
    assert set(body) == {"id", "status"}
    assert body["status"] == "PENDING"
    assert response["Location"] == f"{URL}/{body['id']}"
    application = LoanApplication.objects.get(pk=body["id"])
    assert application.partner_id == partner.pk
    assert (application.monthly_income, application.requested_amount) == (7_500_000, 50_000_000)
    assert application.phone_number == "9876543210"
    assert application.status == LoanStatus.PENDING
    assert application.version == 0
    message = OutboxMessage.objects.get(topic="loan_application.submitted")
    assert message.payload == {"application_id": body["id"], "partner_id": partner.pk}
    assert message.key == f"loan:{body['id']}"
    event = AuditEvent.objects.get(action="loan_application.submitted")
    assert event.object_id == body["id"]
    assert "KLMNP4321Q" not in str(event.after)
    assert "KLMNP4321Q" not in response.content.decode()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pan_number", "abcde1234f"),
        ("pan_number", "ABCDE0000F"),
        ("pan_number", "ABCD12345F"),
        ("pan_number", "ABCDE1234"),
        ("pan_number", ""),
        ("date_of_birth", "2007-06-16"),  # 17 years and 364 days
        ("date_of_birth", "1924-06-15"),  # 101 today
        ("date_of_birth", "2030-01-01"),
        ("date_of_birth", "15/06/1990"),
        ("phone_number", "5876543210"),  # Indian mobiles start 6–9
        ("phone_number", "987654321"),
        ("phone_number", "98765432101"),
        ("phone_number", "+1 9876543210"),
        ("phone_number", "98765-43210"),
        ("email", "not-an-email"),
        ("email", "a@b"),
        ("monthly_income", "0.00"),
        ("monthly_income", "-100.00"),
        ("monthly_income", "12.345"),
        ("monthly_income", 1.5),
        ("requested_amount", "0"),
        ("requested_amount", "10000000.01"),
        ("requested_amount", "abc"),
        ("loan_type", "BOAT"),
        ("consent", False),
        ("first_name", ""),
        ("last_name", "x" * 101),
    ],
)
def test_each_invalid_field_is_422_naming_it_and_changes_nothing(loans, frozen_today, field, value):
    payload = LoanApplicationPayloadFactory(**{field: value})

    body = assert_problem(loans.post(URL, payload), 422)

    assert [e["pointer"] for e in body["errors"]] == [f"/{field}"]
    assert_nothing_written()
    if field == "pan_number":
        assert value not in str(body) or value == ""


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("date_of_birth", "2007-06-15"),  # 18 today
        ("date_of_birth", "1924-06-16"),  # 100, 101 tomorrow
        ("phone_number", "6000000000"),
        ("phone_number", "+919876543210"),
        ("phone_number", "+91-9876543210"),
        ("requested_amount", "10000000.00"),
        ("requested_amount", "0.01"),
        ("monthly_income", "0.01"),
        ("loan_type", "HOME"),
        ("loan_type", "AUTO"),
    ],
)
def test_boundary_values_are_accepted(loans, frozen_today, field, value):
    response = loans.post(URL, LoanApplicationPayloadFactory(**{field: value}))

    assert response.status_code == 202, response.content


def test_missing_body_names_every_required_field(loans):
    body = assert_problem(loans.post(URL, {}), 422)

    assert {e["pointer"] for e in body["errors"]} == {
        "/pan_number", "/first_name", "/last_name", "/date_of_birth", "/email", "/phone_number",
        "/monthly_income", "/requested_amount", "/loan_type", "/consent",
    }  # fmt: skip
    assert_nothing_written()


def test_same_pan_while_pending_is_409_with_existing_id(loans):
    first = loans.post(URL, LoanApplicationPayloadFactory(pan_number="KLMNP4321Q")).json()

    body = assert_problem(loans.post(URL, LoanApplicationPayloadFactory(pan_number="KLMNP4321Q")), 409)

    assert body["existing_id"] == first["id"]
    assert body["type"].endswith("/duplicate-loan-application")
    assert LoanApplication.objects.count() == 1
    assert OutboxMessage.objects.filter(topic="loan_application.submitted").count() == 1


def test_same_pan_is_409_within_24h_even_when_decided_and_accepted_after(loans, partner, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    existing = create_application(partner=partner, pan="KLMNP4321Q")
    LoanApplication.objects.filter(pk=existing.pk).update(
        status=LoanStatus.REJECTED, credit_score=610, decided_at=timezone.now()
    )

    time_machine.shift(timedelta(hours=23, minutes=59))
    body = assert_problem(loans.post(URL, LoanApplicationPayloadFactory(pan_number="KLMNP4321Q")), 409)
    assert body["existing_id"] == str(existing.pk)

    time_machine.shift(timedelta(minutes=2))
    assert loans.post(URL, LoanApplicationPayloadFactory(pan_number="KLMNP4321Q")).status_code == 202


def test_a_pending_application_blocks_its_pan_beyond_24h(loans, partner, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    existing = create_application(partner=partner, pan="KLMNP4321Q")
    time_machine.shift(timedelta(days=3))

    body = assert_problem(loans.post(URL, LoanApplicationPayloadFactory(pan_number="KLMNP4321Q")), 409)

    assert body["existing_id"] == str(existing.pk)


def test_duplicates_are_per_partner(loans, make_key):
    other = make_key(partner=PartnerFactory(name="other-lender"), all_employers=True)
    assert other.post(URL, LoanApplicationPayloadFactory(pan_number="KLMNP4321Q")).status_code == 202

    assert loans.post(URL, LoanApplicationPayloadFactory(pan_number="KLMNP4321Q")).status_code == 202


def test_idempotent_replay_returns_the_same_application(loans):
    payload = LoanApplicationPayloadFactory()
    first = loans.post(URL, payload, HTTP_IDEMPOTENCY_KEY="loan-1")

    again = loans.post(URL, payload, HTTP_IDEMPOTENCY_KEY="loan-1")

    assert first.status_code == again.status_code == 202
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert LoanApplication.objects.count() == 1
    assert OutboxMessage.objects.filter(topic="loan_application.submitted").count() == 1
    different = dict(payload, requested_amount="1.00")
    assert_problem(loans.post(URL, different, HTTP_IDEMPOTENCY_KEY="loan-1"), 422)


def test_get_returns_the_spec_shape_with_masked_pan_and_logs_the_mask(loans, partner):
    created = loans.post(URL, LoanApplicationPayloadFactory(pan_number="KLMNP4321Q")).json()

    response = loans.get(f"{URL}/{created['id']}")

    assert response.status_code == 200
    body = response.json()
    assert body == {
        "id": created["id"],
        "status": "PENDING",
        "pan_masked": "XXXXX4321Q",
        "loan_type": "PERSONAL",
        "requested_amount": "500000.00",
        "credit_score": None,
        "decision_reasons": [],
        "max_approved_amount": None,
        "created_at": body["created_at"],
        "decided_at": None,
    }
    assert "KLMNP4321Q" not in response.content.decode()
    event = PiiAccessEvent.objects.get(subject_id=created["id"])
    assert (event.action, event.field, event.actor) == ("mask", "pan", f"api_key:{loans.api_key.prefix}")


def test_another_partners_key_gets_404(loans, make_key):
    created = loans.post(URL, LoanApplicationPayloadFactory()).json()
    other = make_key(partner=PartnerFactory(name="other-lender"), all_employers=True)

    assert_problem(other.get(f"{URL}/{created['id']}"), 404)
    assert other.get(URL).json()["results"] == []
    assert PiiAccessEvent.objects.count() == 0


def test_unknown_id_is_404(loans):
    assert_problem(loans.get(f"{URL}/00000000-0000-7000-8000-000000000000"), 404)
    assert_problem(loans.get(f"{URL}/not-a-uuid"), 404)


def test_key_without_loans_write_is_403_and_changes_nothing(partner, make_key):
    reader = make_key(partner=partner, all_employers=True, scopes=[Scope.LOANS_READ])

    body = assert_problem(reader.post(URL, LoanApplicationPayloadFactory()), 403)

    assert "loans:write" in body["detail"]
    assert_nothing_written()
    assert reader.get(URL).status_code == 200


def test_key_without_loans_read_is_403_on_get(partner, make_key):
    writer = make_key(partner=partner, all_employers=True, scopes=[Scope.LOANS_WRITE])
    created = writer.post(URL, LoanApplicationPayloadFactory()).json()

    assert_problem(writer.get(f"{URL}/{created['id']}"), 403)
    assert_problem(writer.get(URL), 403)


def test_list_filters_and_cursor_pagination(loans, partner, time_machine):
    time_machine.move_to(dt.datetime(2025, 6, 15, 10, 0, tzinfo=dt.UTC), tick=False)
    early = [create_application(partner=partner, loan_type="HOME") for _ in range(2)]
    time_machine.shift(timedelta(hours=2))
    late = [create_application(partner=partner, loan_type="AUTO") for _ in range(3)]
    LoanApplication.objects.filter(pk=late[0].pk).update(
        status=LoanStatus.REJECTED, credit_score=610, decided_at=timezone.now()
    )

    def ids(response):
        assert response.status_code == 200, response.content
        return [r["id"] for r in response.json()["results"]]

    assert ids(loans.get(URL)) == [str(a.pk) for a in reversed(early + late)]
    assert ids(loans.get(URL, {"loan_type": "HOME"})) == [str(a.pk) for a in reversed(early)]
    assert ids(loans.get(URL, {"status": "REJECTED"})) == [str(late[0].pk)]
    assert ids(loans.get(URL, {"created_after": "2025-06-15T11:00:00Z"})) == [str(a.pk) for a in reversed(late)]
    assert ids(loans.get(URL, {"created_before": "2025-06-15T11:00:00Z"})) == [str(a.pk) for a in reversed(early)]
    assert_problem(loans.get(URL, {"status": "NOPE"}), 422)

    first = loans.get(URL, {"limit": 2})
    assert len(first.json()["results"]) == 2
    assert 'rel="next"' in first["Link"]
    second = loans.client.get(first.json()["next"])
    assert ids(second) == [str(a.pk) for a in reversed(early + late)][2:4]
    assert all(r["pan_masked"].startswith("XXXXX") for r in first.json()["results"])
