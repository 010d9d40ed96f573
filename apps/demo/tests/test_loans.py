"""The demo loans `seed_demo` writes: one application per outcome, through the real scoring and decision steps."""

from __future__ import annotations

import io

import pytest

from apps.demo.loans import seed_demo_loans
from apps.loan_applications.models import LoanApplication
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def partner():
    return PartnerFactory(name="lendco")


def test_seed_demo_loans_ends_in_each_status_and_is_idempotent(partner):
    out = io.StringIO()
    seed_demo_loans(partner=partner, stdout=out)
    seed_demo_loans(partner=partner, stdout=out)

    statuses = sorted(LoanApplication.objects.values_list("status", flat=True))
    assert statuses == ["MANUAL_REVIEW", "PRE_APPROVED", "REJECTED"]
    lines = out.getvalue().splitlines()
    assert len(lines) == 6
    assert [line.split(": ")[-1].split(" ")[0] for line in lines[:3]] == ["PRE_APPROVED", "REJECTED", "MANUAL_REVIEW"]
    assert lines[:3] == lines[3:]
    assert "ABCDE1234F" not in out.getvalue()
