"""Demo data for `manage.py seed_demo`: three applications that end PRE_APPROVED, REJECTED and
MANUAL_REVIEW, run through the real scoring and decision steps synchronously."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any, TextIO

from apps.common.actors import Actor
from apps.loan_applications.handlers import decision_step, scoring_step
from apps.loan_applications.models import LoanApplication, LoanType
from apps.loan_applications.services import loan_application_create


@dataclass(frozen=True)
class DemoApplicant:
    email: str
    pan: str
    first_name: str
    monthly_income: int  # paise
    requested_amount: int  # paise
    loan_type: str
    expected: str


DEMO_APPLICANTS = (
    # The SPEC's test PANs (ABCDE1234F → 790, FGHIJ5678K → 610) stay free for the user to try: a PAN
    # already used here would answer 409 (duplicate within 24 h).
    # 650 + 40 (income > 75,000) + 10 (HOME) ± 5 ≥ 650; income 80,000 × 48 far above 5,00,000 requested.
    DemoApplicant("demo-loan-approved@keel.example", "KEELA2001A", "Asha", 8_000_000, 50_000_000,
                  LoanType.HOME, "PRE_APPROVED"),
    # 650 − 20 (income < 30,000) − 10 (PERSONAL) ± 5 < 650.
    DemoApplicant("demo-loan-rejected@keel.example", "KEELB2002B", "Bharat", 2_500_000, 10_000_000,
                  LoanType.PERSONAL, "REJECTED"),
    # Scores 700 ± 5 (income > 75,000: +40, HOME: +10) but asks for more than income × 48.
    DemoApplicant("demo-loan-review@keel.example", "KLMNP4321Q", "Chitra", 8_000_000, 500_000_000,
                  LoanType.HOME, "MANUAL_REVIEW"),
)  # fmt: skip


def seed_demo_loans(*, partner: Any, stdout: TextIO) -> None:
    """Idempotent: an applicant already present (looked up by e-mail for this partner) is not created again."""
    actor = Actor.system("seed_demo")
    for applicant in DEMO_APPLICANTS:
        application = (
            LoanApplication.objects.filter(partner_id=partner.pk, email=applicant.email).order_by("-id").first()
        )
        if application is None:
            application = loan_application_create(
                partner_id=partner.pk,
                pan=applicant.pan,
                first_name=applicant.first_name,
                last_name="Demo",
                date_of_birth=date(1990, 1, 15),
                email=applicant.email,
                phone_number="9876543210",
                monthly_income=applicant.monthly_income,
                requested_amount=applicant.requested_amount,
                loan_type=applicant.loan_type,
                consent=True,
                actor=actor,
            )
        scoring_step(application_id=application.pk)
        decision_step(application_id=application.pk)
        application.refresh_from_db()
        stdout.write(
            f"Loan application {application.pk} ({applicant.first_name}, {applicant.loan_type}): "
            f"{application.status} (score {application.credit_score})\n"
        )
