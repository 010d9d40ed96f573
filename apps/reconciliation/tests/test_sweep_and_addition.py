"""A killed worker's run is resumed by the sweeper (ADR 0061; its resume end to end: test_resume.py);
`create_addition` takes the member's gender from the insurer's record when the body has none (issue 12)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from apps.common.errors import DomainValidationError
from apps.endorsements.tests.factories import PolicyFactory
from apps.partners.webhooks.models import Event
from apps.reconciliation.contracts import LOCK_TTL_SECONDS
from apps.reconciliation.models import Discrepancy, ReconciliationLock, ReconciliationRun, RunStatus
from apps.reconciliation.services import (
    discrepancy_resolve,
    reconciliation_abandoned_sweep,
    reconciliation_lock_refresh,
)
from apps.reconciliation.tests.conftest import SYSTEM

pytestmark = pytest.mark.django_db


NOTHING = {"resumed": [], "failed": [], "cancelled": []}


def test_sweeper_resumes_a_run_without_heartbeat_and_leaves_a_live_one(start_run) -> None:
    dead = start_run(PolicyFactory())
    live = start_run(PolicyFactory())

    with time_machine.travel(timezone.now() + timedelta(seconds=LOCK_TTL_SECONDS + 5)):
        reconciliation_lock_refresh(run_id=live.pk)  # its worker is still heartbeating
        swept = reconciliation_abandoned_sweep()
        again = reconciliation_abandoned_sweep()

    dead.refresh_from_db()
    live.refresh_from_db()
    assert swept == {**NOTHING, "resumed": [dead.pk]}
    assert again == NOTHING
    assert (dead.status, dead.resumes, dead.error) == (RunStatus.RUNNING, 1, "")
    assert (live.status, live.resumes) == (RunStatus.RUNNING, 0)
    assert sorted(ReconciliationLock.objects.values_list("run_id", "attempt")) == [(dead.pk, 1), (live.pk, 0)]
    assert not Event.objects.filter(type="reconciliation.completed").exists()


def test_sweeper_leaves_a_young_run_alone(start_run) -> None:
    run = start_run(PolicyFactory())
    ReconciliationLock.objects.filter(run=run).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert reconciliation_abandoned_sweep() == NOTHING
    assert ReconciliationRun.objects.get(pk=run.pk).status == RunStatus.RUNNING


def _missing_internally(run, policy, **insurer_value) -> Discrepancy:
    record = {
        "employee_code": "N-1",
        "first_name": "Ravi",
        "last_name": "Iyer",
        "date_of_birth": "1990-01-01",
        "sum_insured": 500_000_00,
        "start_date": timezone.localdate().isoformat(),
        **insurer_value,
    }
    return Discrepancy.objects.create(
        run=run,
        employer=policy.employer,
        policy=policy,
        employee_code="N-1",
        kind="missing_internally",
        severity="high",
        insurer_value=record,
        key="member:N-1",
    )


def test_create_addition_without_gender_is_422_naming_gender_when_the_insurer_has_none(start_run) -> None:
    policy = PolicyFactory()
    discrepancy = _missing_internally(start_run(policy), policy)

    with pytest.raises(DomainValidationError) as refused:
        discrepancy_resolve(discrepancy_id=discrepancy.pk, action="create_addition", note="", actor=SYSTEM)

    assert list(refused.value.errors) == ["gender"]
    discrepancy.refresh_from_db()
    assert discrepancy.status == "open"


def test_create_addition_takes_gender_from_the_insurers_record(start_run) -> None:
    policy = PolicyFactory()
    discrepancy = _missing_internally(start_run(policy), policy, gender="female")

    done = discrepancy_resolve(discrepancy_id=discrepancy.pk, action="create_addition", note="joined", actor=SYSTEM)

    assert done.status == "resolved"
    from apps.endorsements.models import Endorsement

    endorsement = Endorsement.objects.get(pk=done.resolution_result["endorsement_id"])
    assert (endorsement.type, endorsement.details["gender"]) == ("addition", "female")
