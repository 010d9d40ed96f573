"""Operator inputs follow the API's rules (ADRs 0014, 0015): the admin's money and e-mail fields and
`manage.py ledger_topup` refuse what the API refuses, with a message, never a traceback, writing nothing."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from apps.common.testing import row_counts
from apps.employers.models import Employer
from apps.employers.tests.factories import EmployerFactory
from apps.ledger.admin import OperatorTopupForm
from apps.ledger.models import LedgerTransaction

pytestmark = pytest.mark.django_db

# Forms strip surrounding blanks before the grammar applies (every Django form does; an operator pastes
# "2500.00 "), so " 5" is 5.00 here — see test_operator_forms_strip_surrounding_blanks.
BAD_AMOUNTS = ["1e3", "1_000", "1,000", "1.234", "9" * 27, "-5", "5 5", "NaN"]


@pytest.fixture
def operator_client(client):
    user = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-not-secret")
    client.force_login(user)
    return client


def _employer_form(employer_partner_id: int, **overrides: str) -> dict[str, str]:
    return {
        "partner": str(employer_partner_id),
        "name": "Operator Co",
        "external_ref": "OPS-1",
        "status": "active",
        "low_balance_threshold": "2500.50",
        "velocity_limit_per_hour": "1000",
        "contact_email": "hr@operator.example",
        **overrides,
    }


def test_the_admin_takes_the_threshold_in_rupees_and_stores_paise(operator_client):
    partner_id = EmployerFactory().partner_id

    response = operator_client.post("/admin/employers/employer/add/", _employer_form(partner_id))

    assert response.status_code == 302, response.content[:500]
    assert Employer.objects.get(external_ref="OPS-1").low_balance_threshold == 250_050


@pytest.mark.parametrize(
    ("field", "value"),
    [("low_balance_threshold", v) for v in BAD_AMOUNTS]
    + [("contact_email", v) for v in ("x@localhost", "a@b.c", "dev..sen@example.com", "a\u0001b@example.com")],
)
def test_the_admin_refuses_what_the_api_refuses_and_writes_nothing(operator_client, field, value):
    partner_id = EmployerFactory().partner_id
    before = row_counts()

    response = operator_client.post("/admin/employers/employer/add/", _employer_form(partner_id, **{field: value}))

    assert response.status_code == 200  # the form again, with the error
    assert field in response.context["adminform"].form.errors
    assert row_counts() == before


def test_the_admin_change_form_shows_the_threshold_in_rupees(operator_client):
    employer = EmployerFactory(low_balance_threshold=250_050)

    response = operator_client.get(f"/admin/employers/employer/{employer.pk}/change/")

    assert response.status_code == 200
    assert 'value="2500.50"' in response.content.decode()


@pytest.mark.parametrize("amount", [*BAD_AMOUNTS, "0"])
def test_the_operator_topup_form_uses_the_money_grammar(amount):
    form = OperatorTopupForm(data={"amount": amount, "reference": "NEFT-1"})

    assert not form.is_valid()
    assert "amount" in form.errors


def test_operator_forms_strip_surrounding_blanks():
    form = OperatorTopupForm(data={"amount": " 5 ", "reference": "NEFT-1"})

    assert form.is_valid()
    assert form.cleaned_data["amount"] == 500


def test_the_operator_topup_form_refuses_control_characters_in_the_reference():
    form = OperatorTopupForm(data={"amount": "100", "reference": "NEFT\u00001"})

    assert not form.is_valid()
    assert "reference" in form.errors


@pytest.mark.parametrize(
    ("employer", "amount", "reference", "message"),
    [
        (str(10**30), "100", "R-1", "--employer must be an id"),
        (str(2**63), "100", "R-1", "--employer must be an id"),
        ("0", "100", "R-1", "--employer must be an id"),
        (None, "1e3", "R-1", "decimal string"),
        (None, "1_000", "R-1", "decimal string"),
        (None, "100", "R\u00011", "control characters"),
        (None, " 5", "R-1", "decimal string"),
    ],
)
def test_ledger_topup_command_refuses_bad_input_with_a_message(employer, amount, reference, message):
    employer_id = employer or str(EmployerFactory().pk)
    before = row_counts()

    with pytest.raises(CommandError) as caught:
        call_command("ledger_topup", "--employer", employer_id, "--amount", amount, "--reference", reference)

    assert message in str(caught.value)
    assert row_counts() == before
    assert not LedgerTransaction.objects.exists()
