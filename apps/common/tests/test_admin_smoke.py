"""Every admin page an operator opens renders on PostgreSQL (with prepared statements, ADR 0013): each
registered model's changelist, its search, and the change page of one of its rows, over the demo data."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from django.contrib import admin
from django.core.management import call_command
from django.urls import reverse

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


@pytest.fixture
def demo_data(require_postgres, settings, time_machine):
    """The demo seed plus endorsements taken through the pipeline: one ACTIVE (captured, covered), one
    REJECTED (hold released), one parked, in a batch."""
    from apps.common.actors import Actor
    from apps.endorsements import services
    from apps.endorsements.models import Endorsement, EndorsementStatus
    from apps.endorsements.parsing import draft_from_request
    from apps.endorsements.tests.factories import PolicyFactory, addition
    from apps.ledger.services import topup_post

    time_machine.move_to(datetime(2026, 6, 1, 10, 0, tzinfo=UTC), tick=False)
    settings.OUTBOX = {**settings.OUTBOX, "NUDGE_ON_COMMIT": False}
    call_command("seed_demo", verbosity=0)
    actor = Actor.system("tests")
    policy = PolicyFactory()
    topup_post(employer_id=policy.employer_id, amount=5_000_00, reference="smoke", actor=actor)
    drafts = [draft_from_request(addition(policy, code, effective=date(2026, 6, 1))) for code in ("A", "B", "C")]
    services.endorsement_batch_create(
        employer=policy.employer,
        policy=policy,
        drafts=drafts,
        parse_errors=[],
        source="json",
        partner_id=policy.employer.partner_id,
        actor=actor,
    )
    ids = list(Endorsement.objects.order_by("id").values_list("id", flat=True))
    services.endorsements_process(ids=ids, actor=actor)
    services.scheduler_tick(actor=actor, force=True)
    sent = list(Endorsement.objects.filter(status=EndorsementStatus.SENT).order_by("id").values_list("id", flat=True))
    services.results_apply(
        outcomes=[
            services.InsurerOutcome(sent[0], "confirmed", "INS-1"),
            services.InsurerOutcome(sent[1], "rejected", None, "age_limit", "too old"),
        ],
        actor=actor,
    )


def test_every_changelist_search_and_change_page_renders(admin_client, demo_data):
    rendered = []
    for model, model_admin in admin.site._registry.items():
        meta = model._meta
        changelist = reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist")
        response = admin_client.get(changelist)
        assert response.status_code == 200, (changelist, response.status_code)
        if model_admin.search_fields:
            response = admin_client.get(changelist, {"q": "a"})
            assert response.status_code == 200, (changelist, "search", response.status_code)
        row = model._default_manager.order_by("pk").first()
        if row is not None:
            change = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[row.pk])
            response = admin_client.get(change)
            assert response.status_code == 200, (change, response.status_code)
        rendered.append(meta.label)

    assert {
        "endorsements.Endorsement",
        "ledger.LedgerAccount",
        "employers.Employer",
        "employers.Policy",
        "employers.Employee",
        "employers.Coverage",
    } <= set(rendered)
    with_rows = {m._meta.label for m in admin.site._registry if m._default_manager.exists()}
    assert {
        "endorsements.Endorsement",
        "endorsements.EndorsementBatch",
        "ledger.Hold",
        "employers.Employee",
        "employers.Coverage",
    } <= with_rows
