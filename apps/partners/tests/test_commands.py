from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from rest_framework.test import APIClient

from apps.employers.tests.factories import EmployerFactory
from apps.partners.models import APIKey, Partner
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_apikey_create_prints_a_working_key_alone_on_the_last_line():
    output = run("apikey_create", "--partner", "newco", "--scope", "employers:read", "--all-employers")

    key = output.strip().splitlines()[-1]
    assert key.count(".") == 1
    assert " " not in key
    assert Partner.objects.filter(name="newco").exists()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert client.get("/api/v1/employers").status_code == 200
    stored = APIKey.objects.get(prefix=key.split(".")[0])
    assert key not in stored.hashed_key
    assert stored.scopes == ["employers:read"]


def test_apikey_create_binds_the_key_to_the_given_employers():
    partner = PartnerFactory(name="bound")
    employers = [EmployerFactory(partner=partner), EmployerFactory(partner=partner)]

    output = run(
        "apikey_create",
        "--partner",
        "bound",
        "--scope",
        "employers:read",
        "--employer",
        str(employers[0].pk),
        "--employer",
        str(employers[1].pk),
    )

    stored = APIKey.objects.get(prefix=output.strip().splitlines()[-1].split(".")[0])
    assert set(stored.employers.values_list("pk", flat=True)) == {e.pk for e in employers}
    assert stored.all_employers is False


def test_apikey_create_refuses_another_partners_employer():
    PartnerFactory(name="mine")
    foreign = EmployerFactory(partner=PartnerFactory(name="theirs"))

    with pytest.raises(CommandError, match="do not exist for partner mine"):
        run("apikey_create", "--partner", "mine", "--scope", "employers:read", "--employer", str(foreign.pk))
    assert APIKey.objects.count() == 0


def test_apikey_create_for_a_new_partner_that_fails_leaves_no_partner_behind():
    """A mistyped partner name with a bad --employer must not leave a stray partner (newcomer trial)."""
    employer = EmployerFactory()
    partners_before = set(Partner.objects.values_list("name", flat=True))

    with pytest.raises(CommandError, match="do not exist for partner Demo"):
        run("apikey_create", "--partner", "Demo", "--scope", "employers:read", "--employer", str(employer.pk))
    assert set(Partner.objects.values_list("name", flat=True)) == partners_before
    assert APIKey.objects.count() == 0


def test_apikey_revoke_makes_the_key_unusable():
    key = run("apikey_create", "--partner", "p", "--scope", "employers:read", "--all-employers").splitlines()[-1]

    output = run("apikey_revoke", key.split(".")[0])

    assert "Revoked" in output
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    assert client.get("/api/v1/employers").status_code == 401


def test_apikey_revoke_unknown_prefix_fails():
    with pytest.raises(CommandError, match="No API key"):
        run("apikey_revoke", "nope1234")
