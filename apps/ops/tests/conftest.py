"""Data the dashboard tests (client and browser) look at: one of each thing a panel shows, counted."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import transaction
from django.utils import timezone

from apps.audit.services import job_run_finish, job_run_start
from apps.common.actors import Actor
from apps.employers.models import Employer
from apps.employers.tests.factories import EmployerFactory
from apps.endorsements.models import Endorsement, EndorsementBatch
from apps.endorsements.tests.factories import PolicyFactory
from apps.insurers.conflicts import insurer_conflict_record
from apps.ledger.models import AccountKind, LedgerAccount
from apps.ledger.services import topup_post
from apps.outbox.models import OutboxMessage

IST = ZoneInfo("Asia/Kolkata")
_seq = itertools.count(1)


def crafted_row(policy, *, n: int | str, received: datetime, status: str, **fields) -> Endorsement:
    """An unsaved endorsement of `policy` as the pipeline would have left it, received at `received`: the columns
    every crafted row needs (member `E-<n>`, a unique idempotency key), `fields` for the rest."""
    row = {
        "employer_id": policy.employer_id,
        "policy": policy,
        "insurer_id": policy.insurer_id,
        "partner_id": policy.employer.partner_id,
        "type": "addition",
        "status": status,
        "employee_code": f"E-{n}",
        "effective_date": received.date(),
        "premium_direction": "none",
        "content_hash": f"h{n}",
        "idempotency_key": f"ops-test-{n}-{next(_seq)}-{timezone.now().timestamp()}",
    }
    return Endorsement(**{**row, **fields})


def insert_received(rows: list[Endorsement], received: list[datetime]) -> list[Endorsement]:
    """Insert `rows` in bulk, then set each one's `created_at` back to its `received` time (`auto_now_add`
    stamps the insert time; the UPDATE moves the rollup's deltas too, as a late-arriving row would)."""
    made = Endorsement.objects.bulk_create(rows, batch_size=500)
    for row, at in zip(made, received, strict=True):
        row.created_at = at
    Endorsement.objects.bulk_update(made, ["created_at"], batch_size=500)
    return made


def make_endorsement(
    policy,
    *,
    received: datetime | None = None,
    status: str,
    type: str = "addition",
    premium: int = 0,
    direction: str = "none",
    active_after: float | None = None,
    rejection_class: str = "",
    batch: EndorsementBatch | None = None,
) -> Endorsement:
    """One endorsement row as the pipeline would have left it, received at `received` (default: now)."""
    received = received or timezone.now()
    row = crafted_row(
        policy,
        n=next(_seq),
        received=received,
        status=status,
        batch=batch,
        type=type,
        premium_amount=premium,
        premium_direction=direction if premium else "none",
        rejection_class=rejection_class,
    )
    row.save(force_insert=True)
    activated = received + timedelta(seconds=active_after) if active_after is not None else None
    # created_at is auto_now_add: the received time of a crafted row is set after the insert.
    Endorsement.objects.filter(pk=row.pk).update(created_at=received, activated_at=activated)
    row.refresh_from_db()
    return row


@pytest.fixture
def ops_world(django_user_model):
    """Counted state for every panel: 9 endorsements (2 FAILED, 1 ON_HOLD_FUNDS, 1 ON_HOLD_REVIEW), a running
    batch at 25 %, 3 pending and 1 dead outbox rows, one low-balance employer (₹500.00), two job runs, one
    unresolved insurer conflict."""
    policy = PolicyFactory()
    now = timezone.now()
    made = []
    for status, n in {"RECEIVED": 1, "ACTIVE": 2, "FAILED": 2, "ON_HOLD_FUNDS": 1, "ON_HOLD_REVIEW": 1}.items():
        for _ in range(n):
            premium = {"premium": 2_071_23, "direction": "debit"} if status == "FAILED" else {}
            made.append(make_endorsement(policy, status=status, received=now - timedelta(minutes=30), **premium))
    # The insurer rejected an endorsement Keel had already made ACTIVE: one unresolved conflict.
    active = next(e for e in made if e.status == "ACTIVE")
    with transaction.atomic():  # the service runs in its caller's transaction
        insurer_conflict_record(
            insurer_id=policy.insurer_id, endorsement_id=active.pk, source="callback", outcome="rejected",
            keel_status="ACTIVE", rejection_class="age_limit",
        )  # fmt: skip
    batch = EndorsementBatch.objects.create(
        employer=policy.employer,
        policy=policy,
        partner_id=policy.employer.partner_id,
        source="json",
        total_rows=4,
        accepted=4,
        rejected=0,
    )
    batch_rows = [make_endorsement(policy, status="RECEIVED", batch=batch) for _ in range(3)]
    batch_rows.append(make_endorsement(policy, status="ACTIVE", batch=batch))
    OutboxMessage.objects.bulk_create(
        [
            OutboxMessage(topic="ops.test", payload={}, available_at=now - timedelta(seconds=120)),
            OutboxMessage(topic="ops.test", payload={}),
            OutboxMessage(topic="ops.test", payload={}),
            OutboxMessage(topic="ops.test", payload={}, status="dead", attempts=10),
        ]
    )
    lean: Employer = EmployerFactory(low_balance_threshold=1_000_000_00)
    topup_post(employer_id=lean.pk, amount=500_00, reference="ops-test-topup", actor=Actor.system("tests"))
    LedgerAccount.objects.filter(kind=AccountKind.EMPLOYER, employer=lean).update(low_balance=True)
    OutboxMessage.objects.exclude(topic="ops.test").delete()  # the top-up's own events: not counted here
    ok = job_run_start(job="audit.seal")
    job_run_finish(ok, status="succeeded", counts={"sealed": 3})
    bad = job_run_start(job="ledger.verify")
    job_run_finish(bad, status="failed", error="RuntimeError: drift")
    staff = django_user_model.objects.create_user("operator", password="op-pass-123", is_staff=True)
    return {"policy": policy, "batch": batch, "batch_rows": batch_rows, "lean": lean, "staff": staff}
