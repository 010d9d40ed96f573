"""The admin lists runs and discrepancies and resolves through the same service as the API."""

from __future__ import annotations

import pytest

from apps.endorsements.tests.factories import PolicyFactory
from apps.reconciliation.models import Discrepancy

pytestmark = pytest.mark.django_db


def test_admin_lists_filter_and_ignore_action(admin_client, start_run) -> None:
    policy = PolicyFactory()
    run = start_run(policy)
    d = Discrepancy.objects.create(
        run=run,
        employer=policy.employer,
        policy=policy,
        employee_code="E1",
        kind="missing_internally",
        severity="high",
        key="member:E1",
    )

    runs = admin_client.get("/admin/reconciliation/reconciliationrun/?status__exact=RUNNING")
    listed = admin_client.get("/admin/reconciliation/discrepancy/?kind__exact=missing_internally")
    changes = admin_client.get("/admin/reconciliation/insurerrosterchange/")
    acted = admin_client.post(
        "/admin/reconciliation/discrepancy/", {"action": "ignore", "_selected_action": [d.pk]}, follow=True
    )

    assert (runs.status_code, listed.status_code, changes.status_code, acted.status_code) == (200, 200, 200, 200)
    d.refresh_from_db()
    assert (d.status, d.resolution_action) == ("ignored", "ignore")
