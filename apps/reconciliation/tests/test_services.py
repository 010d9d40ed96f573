"""Runs, locks and the insurer-side roster against the real database (issue 12)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import time_machine
from django.db import IntegrityError, transaction
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.endorsements.tests.factories import PolicyFactory
from apps.reconciliation.contracts import LOCK_TTL_SECONDS, RunLockLostError, RunOverlapError
from apps.reconciliation.models import (
    Discrepancy,
    InsurerRosterChange,
    InsurerRosterEntry,
    ReconciliationLock,
    ReconciliationRun,
    RunStatus,
)
from apps.reconciliation.services import (
    reconciliation_cancel,
    reconciliation_finish,
    reconciliation_lock_refresh,
    roster_page_record,
)
from apps.reconciliation.tests.conftest import member

pytestmark = pytest.mark.django_db


def test_second_run_for_same_insurer_and_employer_is_refused_naming_the_first(start_run) -> None:
    policy = PolicyFactory()
    first = start_run(policy)

    with pytest.raises(RunOverlapError) as refused:
        start_run(policy)

    assert refused.value.running_run_id == first.pk
    assert list(ReconciliationRun.objects.values_list("pk", flat=True)) == [first.pk]
    assert list(ReconciliationLock.objects.values_list("run_id", flat=True)) == [first.pk]


def test_operator_run_over_all_employers_overlaps_a_single_employer_run(start_run) -> None:
    policy = PolicyFactory()
    PolicyFactory(insurer=policy.insurer)
    single = start_run(policy)

    with pytest.raises(RunOverlapError) as refused:
        start_run(policy, employer_id=None)

    assert refused.value.running_run_id == single.pk
    assert ReconciliationLock.objects.count() == 1


def test_runs_of_other_employers_do_not_overlap(start_run) -> None:
    first = start_run(PolicyFactory())
    second = start_run(PolicyFactory())

    assert first.pk != second.pk
    assert ReconciliationLock.objects.count() == 2


def test_expired_lock_is_taken_over_and_the_dead_run_ends_failed(start_run) -> None:
    policy = PolicyFactory()
    dead = start_run(policy)

    with time_machine.travel(timezone.now() + timedelta(seconds=LOCK_TTL_SECONDS + 1)):
        fresh = start_run(policy)

    dead.refresh_from_db()
    assert dead.status == RunStatus.FAILED
    assert dead.finished_at is not None
    assert list(ReconciliationLock.objects.values_list("run_id", flat=True)) == [fresh.pk]
    with pytest.raises(RunLockLostError):
        reconciliation_lock_refresh(run_id=dead.pk)


def test_finish_releases_the_lock_and_is_once_only(start_run) -> None:
    policy = PolicyFactory()
    run = start_run(policy)

    assert reconciliation_finish(run_id=run.pk, status=RunStatus.COMPLETED, summary={"matched": 0}) is True
    assert reconciliation_finish(run_id=run.pk, status=RunStatus.FAILED) is False

    run.refresh_from_db()
    assert (run.status, run.summary) == (RunStatus.COMPLETED, {"matched": 0})
    assert ReconciliationLock.objects.count() == 0
    assert start_run(policy).pk != run.pk


def test_page_upsert_counts_each_member_once_per_run_and_keeps_history(start_run) -> None:
    policy = PolicyFactory()
    run = start_run(policy)
    page = [member("E1"), member("E2")]

    first = roster_page_record(
        run_id=run.pk, insurer_id=policy.insurer_id, policy_id=policy.pk, members=page, next_cursor="c2"
    )
    again = roster_page_record(
        run_id=run.pk, insurer_id=policy.insurer_id, policy_id=policy.pk, members=page, next_cursor="c2"
    )

    run.refresh_from_db()
    assert (first, again) == (2, 0)
    assert (run.pages_pulled, run.rows_pulled, run.resume_cursors) == (2, 2, {str(policy.pk): "c2"})
    assert InsurerRosterEntry.objects.count() == 2
    assert InsurerRosterChange.objects.count() == 0

    reconciliation_finish(run_id=run.pk, status=RunStatus.COMPLETED)
    next_run = start_run(policy)
    changed = [member("E1", date_of_birth=date(1991, 1, 2)), member("E2")]
    seen = roster_page_record(
        run_id=next_run.pk, insurer_id=policy.insurer_id, policy_id=policy.pk, members=changed, next_cursor=None
    )

    assert seen == 2
    change = InsurerRosterChange.objects.get()
    assert (change.run_id, change.previous, change.new) == (
        next_run.pk,
        {"date_of_birth": "1990-05-17"},
        {"date_of_birth": "1991-01-02"},
    )
    assert InsurerRosterEntry.objects.get(employee_code="E1").date_of_birth == date(1991, 1, 2)
    assert set(InsurerRosterEntry.objects.values_list("last_seen_run_id", flat=True)) == {next_run.pk}
    next_run.refresh_from_db()
    assert (next_run.policies_done, next_run.resume_cursors) == (1, {str(policy.pk): None})


def test_page_of_a_run_that_lost_its_lock_writes_nothing(start_run) -> None:
    policy = PolicyFactory()
    run = start_run(policy)
    ReconciliationLock.objects.all().delete()

    with pytest.raises(RunLockLostError):
        roster_page_record(
            run_id=run.pk, insurer_id=policy.insurer_id, policy_id=policy.pk, members=[member("E1")], next_cursor=None
        )

    assert InsurerRosterEntry.objects.count() == 0
    run.refresh_from_db()
    assert (run.pages_pulled, run.rows_pulled) == (0, 0)


def test_cancel_marks_the_request_once_and_audits_it(start_run, operator) -> None:
    run = start_run(PolicyFactory())

    reconciliation_cancel(run=run, actor=operator)
    again = reconciliation_cancel(run=run, actor=operator)

    assert again.cancel_requested_at is not None
    assert again.status == RunStatus.RUNNING
    assert AuditEvent.objects.filter(action="reconciliation.run_cancel_requested").count() == 1


def test_database_refuses_a_resolved_discrepancy_without_its_resolution(start_run) -> None:
    policy = PolicyFactory()
    run = start_run(policy)

    with pytest.raises(IntegrityError), transaction.atomic():
        Discrepancy.objects.create(
            run=run,
            employer=policy.employer,
            policy=policy,
            kind="missing_at_insurer",
            severity="high",
            key="member:E1",
            status="resolved",
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        ReconciliationLock.objects.create(
            insurer=policy.insurer, employer=policy.employer, run=run, expires_at=timezone.now()
        )
