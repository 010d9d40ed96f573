"""`oauth_client_create`, `oauth_client_revoke`, `oauth_key_rotate` and the admin: secrets shown once, stored
hashed, every change audited, bad input refused with nothing written."""

from __future__ import annotations

import hashlib
import io

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from apps.audit.models import AuditEvent
from apps.employers.tests.factories import EmployerFactory
from apps.oauth.models import OAuthClient, SigningKey
from apps.oauth.testing import token_request
from apps.partners.models import Partner
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db


def test_client_create_prints_the_secret_once_and_stores_its_hash():
    out = io.StringIO()

    call_command("oauth_client_create", "--partner", "acme", "--scope", "employers:read", "--all-employers", stdout=out)

    lines = out.getvalue().splitlines()
    secret = lines[-1]
    client = OAuthClient.objects.get()
    assert lines[0] == f"Created partner 'acme' (id {Partner.objects.get(name='acme').pk})."
    assert f"client_id: {client.client_id}" in lines
    assert client.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(list(AuditEvent.objects.values_list("after", flat=True)))
    assert AuditEvent.objects.filter(action="oauth_client.created", object_id=client.client_id).count() == 1
    assert token_request(client.client_id, secret).status_code == 200


def test_client_create_refuses_another_partners_employer_and_writes_nothing():
    foreign = EmployerFactory(partner=PartnerFactory(name="other"))
    audit_before = AuditEvent.objects.count()

    with pytest.raises(CommandError, match="employers: employer"):
        call_command(
            "oauth_client_create", "--partner", "acme", "--scope", "employers:read", "--employer", str(foreign.pk)
        )

    assert not OAuthClient.objects.exists()
    assert not Partner.objects.filter(name="acme").exists()
    assert AuditEvent.objects.count() == audit_before


def test_revoke_and_rotate_commands(make_oauth_client):
    client, _ = make_oauth_client(partner=PartnerFactory(name="acme"), all_employers=True)

    call_command("oauth_client_revoke", client.client_id, stdout=io.StringIO())
    call_command("oauth_client_revoke", client.client_id, stdout=io.StringIO())  # idempotent
    call_command("oauth_key_rotate", stdout=io.StringIO())
    call_command("oauth_key_rotate", stdout=io.StringIO())

    client.refresh_from_db()
    assert client.revoked_at is not None
    assert AuditEvent.objects.filter(action="oauth_client.revoked").count() == 1
    assert SigningKey.objects.filter(retired_at__isnull=True).count() == 1
    assert SigningKey.objects.count() == 3  # the first client's key, then one per rotation
    with pytest.raises(CommandError, match="No OAuth client"):
        call_command("oauth_client_revoke", "kc_nobody", stdout=io.StringIO())


def test_admin_lists_clients_with_last_use_and_revokes_through_the_service(client, make_oauth_client):
    staff = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")
    client.force_login(staff)
    oauth_client, _ = make_oauth_client(partner=PartnerFactory(name="acme"), all_employers=True)

    listing = client.get("/admin/oauth/oauthclient/")
    assert listing.status_code == 200
    assert oauth_client.client_id in listing.content.decode()

    response = client.post(
        "/admin/oauth/oauthclient/",
        {"action": "revoke_clients", "_selected_action": [oauth_client.pk]},
    )
    assert response.status_code == 302
    oauth_client.refresh_from_db()
    assert oauth_client.revoked_at is not None
    assert AuditEvent.objects.filter(action="oauth_client.revoked", object_id=oauth_client.client_id).count() == 1


def test_admin_add_creates_the_client_through_the_service_and_shows_the_secret_once(client):
    staff = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")
    client.force_login(staff)
    partner = PartnerFactory(name="acme")

    response = client.post(
        "/admin/oauth/oauthclient/add/",
        {"partner": partner.pk, "name": "acme back office", "scopes": '["employers:read"]', "all_employers": "on"},
        follow=True,
    )

    assert response.status_code == 200
    created = OAuthClient.objects.get()
    messages = [str(m) for m in response.context["messages"]]
    assert any(created.client_id in m and "kcs_" in m for m in messages)
    assert AuditEvent.objects.filter(action="oauth_client.created").count() == 1


def test_admin_add_with_neither_employers_nor_all_is_a_form_error(client):
    staff = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")
    client.force_login(staff)
    partner = PartnerFactory(name="acme")

    response = client.post(
        "/admin/oauth/oauthclient/add/", {"partner": partner.pk, "name": "x", "scopes": '["employers:read"]'}
    )

    assert response.status_code == 200
    assert "choose employers or tick all employers" in response.content.decode()
    assert not OAuthClient.objects.exists()
