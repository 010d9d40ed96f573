"""/ops/ through the Django test client: who may see it, and each panel's figures for counted data."""

from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.django_db


def text_of(html: str, element_id: str) -> str:
    match = re.search(rf'id="{re.escape(element_id)}"[^>]*>(.*?)</', html, re.S)
    assert match, f"no element #{element_id}"
    return re.sub(r"<[^>]+>", "", match.group(1)).strip()


@pytest.mark.parametrize("path", ["/ops/", "/ops/panels"])
def test_anonymous_and_non_staff_are_sent_to_the_login(client, django_user_model, path):
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")
    django_user_model.objects.create_user("clerk", password="pw-12345678", is_staff=False)
    client.login(username="clerk", password="pw-12345678")
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/?next=")


def test_staff_sees_every_panel_with_its_figures(client, ops_world):
    client.force_login(ops_world["staff"])
    response = client.get("/ops/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert text_of(html, "outbox-pending") == "3"
    assert text_of(html, "outbox-dead") == "1"
    oldest = float(text_of(html, "outbox-oldest").removesuffix(" s"))
    assert 120 <= oldest < 180
    assert text_of(html, "attention-FAILED") == "2"
    assert text_of(html, "attention-ON_HOLD_FUNDS") == "1"
    assert text_of(html, "attention-ON_HOLD_REVIEW") == "1"
    assert text_of(html, "funnel-RECEIVED") == "4"
    assert text_of(html, "funnel-ACTIVE") == "3"
    assert text_of(html, "chart-total") == "11"
    assert re.search(rf'id="batch-{ops_world["batch"].pk}"[^>]*value="25.00"', html)
    assert text_of(html, "low-balance-count") == "1"
    assert text_of(html, f"low-balance-{ops_world['lean'].pk}") == "₹500.00"
    assert text_of(html, "circuit-sandbox-rest") == "closed"
    assert text_of(html, "job-ledger.verify") == "failed"
    assert text_of(html, "job-audit.seal") == "succeeded"
    assert text_of(html, "queue-endorsements") == "0"
    assert text_of(html, "conflicts-count") == "1"
    # Reconciliation and webhooks are read through their apps' selectors: empty here, so their empty states.
    assert "not part of this deployment yet" not in html
    assert "No reconciliation has run." in html
    assert "No delivery yet." in html
    assert 'href="/admin/endorsements/endorsement/?status__exact=FAILED"' in html
    for asset in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert asset.startswith(("/", "#", "data:")), f"off-machine asset {asset}"


def test_reconciliation_runs_and_webhook_deliveries_are_listed_newest_first(client, ops_world):
    from apps.partners.webhooks.models import Event, WebhookDelivery, WebhookEndpoint
    from apps.reconciliation.models import ReconciliationRun

    policy = ops_world["policy"]
    older = ReconciliationRun.objects.create(insurer_id=policy.insurer_id, requested_by="ops-test", rows_pulled=7)
    newer = ReconciliationRun.objects.create(
        insurer_id=policy.insurer_id, employer_id=policy.employer_id, requested_by="ops-test", rows_pulled=3
    )
    partner_id = policy.employer.partner_id
    endpoint = WebhookEndpoint.objects.create(partner_id=partner_id, url="https://hooks.example/keel")
    event = Event.objects.create(
        partner_id=partner_id, type="endorsement.active", object_type="endorsement", object_id="1", sequence=1
    )
    delivery = WebhookDelivery.objects.create(
        endpoint=endpoint, event=event, order_key="endorsement:1", status="failed", attempts=4
    )
    client.force_login(ops_world["staff"])
    html = client.get("/ops/").content.decode()
    assert text_of(html, f"reconciliation-{older.pk}") == "RUNNING"
    assert text_of(html, f"reconciliation-{newer.pk}") == "RUNNING"
    assert html.index(f"reconciliation-{newer.pk}") < html.index(f"reconciliation-{older.pk}")
    assert text_of(html, f"webhook-delivery-{delivery.pk}") == "failed"
    assert "No reconciliation has run." not in html
    assert "No delivery yet." not in html


def test_the_panels_fragment_is_the_same_figures_without_the_page(client, ops_world):
    client.force_login(ops_world["staff"])
    html = client.get("/ops/panels").content.decode()
    assert "<html" not in html
    assert text_of(html, "attention-FAILED") == "2"


def test_the_failed_link_opens_the_filtered_admin_list(client, ops_world):
    ops_world["staff"].is_superuser = True
    ops_world["staff"].save()
    client.force_login(ops_world["staff"])
    response = client.get("/admin/endorsements/endorsement/?status__exact=FAILED")
    assert response.status_code == 200
    assert "2 endorsements" in response.content.decode()
