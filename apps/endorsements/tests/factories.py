from __future__ import annotations

from datetime import date
from decimal import Decimal

import factory

from apps.employers.models import Policy
from apps.employers.tests.factories import EmployerFactory, InsurerFactory


class PolicyFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Policy

    employer = factory.SubFactory(EmployerFactory)
    insurer = factory.SubFactory(InsurerFactory, code="sandbox-rest")
    policy_number = factory.Sequence(lambda n: f"GMC-{n:06d}")
    start_date = date(2026, 4, 1)
    end_date = date(2027, 3, 31)
    premium_rate_per_mille = Decimal("4.5")
    default_sum_insured = 500_000_00
    backdating_days = 30


def addition(policy: Policy, code: str, *, effective: date, dob: str = "1990-05-17", **extra) -> dict:
    return {
        "employer": policy.employer_id,
        "policy": policy.pk,
        "type": "addition",
        "effective_date": effective.isoformat(),
        "employee": {
            "employee_code": code,
            "first_name": "Asha",
            "last_name": "Rao",
            "date_of_birth": dob,
            "gender": "female",
            "email": f"{code.lower()}@example.com",
        },
        **extra,
    }


def deletion(policy: Policy, code: str, *, effective: date) -> dict:
    return {
        "employer": policy.employer_id,
        "policy": policy.pk,
        "type": "deletion",
        "effective_date": effective.isoformat(),
        "employee_code": code,
    }


def correction(policy: Policy, code: str, *, effective: date, **changes) -> dict:
    return {
        "employer": policy.employer_id,
        "policy": policy.pk,
        "type": "correction",
        "effective_date": effective.isoformat(),
        "employee_code": code,
        "changes": changes,
    }
