"""Operators can browse and filter every stream in the admin, and cannot add, change or delete anything."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent, AuditSeal
from apps.audit.sealing import seal_all
from apps.audit.services import insurer_exchange_record, job_run

pytestmark = pytest.mark.django_db

MODELS = ["auditevent", "piiaccessevent", "insurerexchangeevent", "jobrunevent", "auditseal", "auditchainhead"]


@pytest.mark.parametrize("model", MODELS)
def test_changelists_render_and_adding_is_forbidden(admin_client, record, model):
    record(employer_id=5, after={"email": "a@x.io", "name": "N"})
    insurer_exchange_record(insurer_code="x", operation="submit", request_body={"a": 1})
    with job_run("nightly"):
        pass
    seal_all()

    assert admin_client.get(f"/admin/audit/{model}/").status_code == 200
    assert admin_client.get(f"/admin/audit/{model}/add/").status_code == 403


def test_event_page_is_read_only_with_pretty_json_and_cannot_be_deleted(admin_client, record):
    event = record(employer_id=5, before={"name": "A"}, after={"name": "B"})

    page = admin_client.get(f"/admin/audit/auditevent/{event.pk}/change/")
    delete = admin_client.post(f"/admin/audit/auditevent/{event.pk}/delete/", {"post": "yes"})

    assert page.status_code == 200
    html = page.content.decode()
    assert "&quot;name&quot;: &quot;B&quot;" in html
    assert 'name="_save"' not in html
    assert delete.status_code == 403
    assert AuditEvent.objects.filter(pk=event.pk).exists()


def test_filters_by_employer_action_and_actor_kind(admin_client, record):
    record(employer_id=5, action="employer.updated", after={"n": 1})
    record(employer_id=6, action="employer.created", after={"n": 2})

    page = admin_client.get("/admin/audit/auditevent/?employer_id=5&actor_kind=api_key&action=employer.updated")

    assert page.status_code == 200
    assert [e.employer_id for e in page.context["cl"].result_list] == [5]
    assert AuditSeal.objects.count() == 0
