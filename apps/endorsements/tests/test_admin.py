"""The endorsement and batch admin an operator reads: money in rupees, and one page per endorsement with its
history, its ledger entries and holds, and its insurer exchanges."""

from __future__ import annotations

import re

import pytest

from apps.audit.services import insurer_exchange_record
from apps.common.actors import Actor
from apps.endorsements.models import EndorsementBatch, EndorsementHistory
from apps.endorsements.tests.factories import PolicyFactory
from apps.ledger.services import hold_capture, hold_place, topup_post
from apps.ops.tests.conftest import make_endorsement

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator(admin_client):
    return admin_client


def test_endorsement_page_shows_rupees_history_ledger_and_exchanges(operator):
    policy = PolicyFactory()
    endorsement = make_endorsement(policy, status="ACTIVE", premium=2_071_23, direction="debit", active_after=60)
    EndorsementHistory.objects.create(endorsement=endorsement, from_status="SENT", to_status="CONFIRMED", actor="t")
    actor = Actor.system("tests")
    topup_post(employer_id=policy.employer_id, amount=10_00_000_00, reference="adm-topup", actor=actor)
    hold_place(employer_id=policy.employer_id, amount=2_071_23, reference=endorsement.hold_reference,
               endorsement_id=endorsement.pk, actor=actor)  # fmt: skip
    hold_capture(reference=endorsement.hold_reference, actor=actor)
    insurer_exchange_record(insurer_code="sandbox-rest", operation="submit", endpoint="http://127.0.0.1/x",
                            response_status=200, duration_ms=42, endorsement_id=endorsement.pk)  # fmt: skip

    html = operator.get(f"/admin/endorsements/endorsement/{endorsement.pk}/change/").content.decode()

    assert "₹2,071.23" in html
    assert "207123" not in html  # never raw paise
    assert "paise" not in html
    assert "CONFIRMED" in html  # the history inline
    assert re.search(r"capture \(debit\).*?₹2,071\.23.*?₹9,97,928\.77", html, re.S)  # entry + balance after
    assert "captured" in html  # the hold and its resolution
    assert "sandbox-rest" in html  # the exchange
    assert ">42<" in html


def test_endorsement_changelist_shows_signed_rupees(operator):
    policy = PolicyFactory()
    make_endorsement(policy, status="ACTIVE", premium=50_00, direction="credit", type="deletion")
    html = operator.get("/admin/endorsements/endorsement/").content.decode()
    assert "−₹50.00" in html
    assert "5000" not in re.sub(r"<[^>]+>", " ", html).split("premium")[-1][:2000]


def test_batch_changelist_and_page_show_progress(operator):
    policy = PolicyFactory()
    batch = EndorsementBatch.objects.create(
        employer=policy.employer, policy=policy, partner_id=policy.employer.partner_id, source="json",
        total_rows=4, accepted=4, rejected=0,
    )  # fmt: skip
    for status in ("ACTIVE", "REJECTED", "RECEIVED", "SENT"):
        make_endorsement(policy, status=status, batch=batch)
    for path in ("/admin/endorsements/endorsementbatch/", f"/admin/endorsements/endorsementbatch/{batch.pk}/change/"):
        html = operator.get(path).content.decode()
        assert re.search(rf'id="batch-progress-{batch.pk}"[^>]*value="50.00"', html), path
