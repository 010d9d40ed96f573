from __future__ import annotations

import itertools
import string
from datetime import date
from typing import Any

import factory

from apps.common.actors import Actor
from apps.loan_applications.models import LoanApplication
from apps.loan_applications.services import loan_application_create

_serials = itertools.count(1)


def unique_pan() -> str:
    """A valid PAN that is neither of the bureau's fixed test identities and is unique in this process."""
    n = next(_serials)
    letters = string.ascii_uppercase
    prefix = "PQ" + letters[(n // 9999) % 26] + "RS"
    return f"{prefix}{n % 9999 + 1:04d}{letters[n % 26]}"


class LoanApplicationPayloadFactory(factory.DictFactory):
    """A valid `POST /api/v1/loan-applications` body (money as decimal strings)."""

    pan_number = factory.LazyFunction(unique_pan)
    first_name = "Asha"
    last_name = "Verma"
    date_of_birth = "1990-04-12"
    email = factory.Sequence(lambda n: f"applicant{n}@example.in")
    phone_number = "9876543210"
    monthly_income = "75000.00"
    requested_amount = "500000.00"
    loan_type = "PERSONAL"
    consent = True


def create_application(*, partner: Any, **overrides: Any) -> LoanApplication:
    """Through the real service (the PAN must be encrypted with the application id as AAD)."""
    values: dict[str, Any] = {
        "pan": unique_pan(),
        "first_name": "Asha",
        "last_name": "Verma",
        "date_of_birth": date(1990, 4, 12),
        "email": "asha@example.in",
        "phone_number": "9876543210",
        "monthly_income": 7_500_000,
        "requested_amount": 50_000_000,
        "loan_type": "PERSONAL",
        "consent": True,
        "actor": Actor.system("tests"),
    }
    values.update(overrides)
    return loan_application_create(partner_id=partner.pk, **values)
