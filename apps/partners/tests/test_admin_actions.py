"""Admin actions report how many objects they acted on (newcomer trial, 2026-12-02: "Revoked 0 key(s)." after
revoking one — the count was taken after the action, of a queryset the action had changed)."""

from __future__ import annotations

import pytest
from django.contrib.messages import get_messages

from apps.partners.models import APIKey
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db


def test_revoking_keys_in_the_admin_says_how_many_it_revoked(admin_client, make_key):
    partner = PartnerFactory(name="acme")
    keys = [make_key(partner=partner, all_employers=True) for _ in range(2)]
    response = admin_client.post(
        "/admin/partners/apikey/",
        {"action": "revoke_keys", "_selected_action": [k.api_key.pk for k in keys]},
        follow=True,
    )

    assert [str(m) for m in get_messages(response.wsgi_request)] == ["Revoked 2 key(s)."]
    assert APIKey.objects.filter(pk__in=[k.api_key.pk for k in keys], revoked_at__isnull=True).count() == 0
