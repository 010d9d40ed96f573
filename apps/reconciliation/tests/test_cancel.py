"""Cancelling a run (ADR 0063): with a live worker the run stops at its next page, as before; with no live worker
(its lock not refreshed for `DEAD_WORKER_SECONDS`: killed, or never picked up) the DELETE itself ends it CANCELLED,
audited and with its partner events, and nothing revives it later."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.endorsements.tests.factories import PolicyFactory
from apps.insurers.sandbox.roster import sandbox_roster_control
from apps.outbox.models import OutboxMessage
from apps.partners.webhooks.models import Event
from apps.reconciliation.contracts import (
    AUDIT_RUN_CANCEL_REQUESTED,
    AUDIT_RUN_CANCELLED,
    AUDIT_RUN_STARTED,
    DEAD_WORKER_SECONDS,
    LOCK_TTL_SECONDS,
    SUMMARY_KEYS,
    TOPIC_RUN_REQUESTED,
    RunLockLostError,
)
from apps.reconciliation.models import ReconciliationLock, ReconciliationRun, RunStatus
from apps.reconciliation.runner import reconciliation_execute
from apps.reconciliation.services import (
    reconciliation_abandoned_sweep,
    reconciliation_cancel,
    reconciliation_lock_refresh,
)
from apps.reconciliation.tests.conftest import SANDBOX, WorkerKilled, die

pytestmark = pytest.mark.django_db(transaction=True)


def _audits(run: ReconciliationRun) -> list[str]:
    """The run's audit actions besides its start, in order."""
    return list(
        AuditEvent.objects.filter(object_type="reconciliation_run", object_id=str(run.pk))
        .order_by("pk")
        .exclude(action=AUDIT_RUN_STARTED)
        .values_list("action", flat=True)
    )


def _events(run: ReconciliationRun) -> list[tuple[str, dict]]:
    return [
        (e.data["status"], e.data["summary"])
        for e in Event.objects.filter(type="reconciliation.completed", object_id=str(run.pk))
    ]


def test_delete_of_a_run_no_worker_picked_up_ends_it_cancelled_at_once(make_key) -> None:
    # Given a run started through the API that no worker ever picked up (the broker is down, say).
    policy = PolicyFactory()
    client = make_key(partner=policy.employer.partner, employers=[policy.employer])
    run_id = client.post("/api/v1/reconciliations", {"insurer": policy.insurer.code}).json()["id"]
    run = ReconciliationRun.objects.get(pk=run_id)

    # When it is cancelled once its lock has gone unrefreshed past the threshold.
    with time_machine.travel(timezone.now() + timedelta(seconds=DEAD_WORKER_SECONDS + 1)):
        response = client.delete(f"/api/v1/reconciliations/{run_id}")

    # Then the answer already shows it CANCELLED: locks released, audited, one partner event.
    body = response.json()
    assert response.status_code == 202
    assert (body["status"], body["finished_at"] is not None, body["cancel_requested_at"] is not None) == (
        "CANCELLED",
        True,
        True,
    )
    run.refresh_from_db()
    assert (run.status, run.error) == (RunStatus.CANCELLED, "")
    assert ReconciliationLock.objects.count() == 0
    assert _audits(run) == [AUDIT_RUN_CANCEL_REQUESTED, AUDIT_RUN_CANCELLED]
    cancelled = AuditEvent.objects.get(action=AUDIT_RUN_CANCELLED, object_id=str(run.pk))
    assert (cancelled.before, cancelled.after["status"], cancelled.after["resumes"]) == (
        {"status": "RUNNING"},
        "CANCELLED",
        0,
    )
    assert _events(run) == [("CANCELLED", dict.fromkeys(SUMMARY_KEYS, 0))]

    # And the queued request, delivered late, finds it ended and changes nothing.
    late = reconciliation_execute(run_id=run.pk, attempt=0)
    assert (late.status, late.finished_at, late.pages_pulled) == (RunStatus.CANCELLED, run.finished_at, 0)
    assert len(_events(run)) == 1


def test_cancel_after_kill_minus_nine_ends_the_run_at_once_and_no_resume_revives_it(
    sandbox, covered_policy, start_run, operator
) -> None:
    # Given a run whose worker was killed after two of five pages.
    policy = covered_policy(10)
    sandbox_roster_control(code=SANDBOX, throttle_every=3)
    run = start_run(policy)
    with pytest.raises(WorkerKilled):
        reconciliation_execute(run_id=run.pk, page_size=2, sleep=die)
    killed_at = timezone.now()

    # When it is cancelled a minute later (before the lock's TTL would let the sweep see it).
    with time_machine.travel(killed_at + timedelta(seconds=DEAD_WORKER_SECONDS + 1)):
        cancelled = reconciliation_cancel(run=run, actor=operator)
    finished_at = cancelled.finished_at

    # Then it is CANCELLED now, keeping what it pulled.
    assert (cancelled.status, cancelled.pages_pulled, cancelled.rows_pulled) == (RunStatus.CANCELLED, 2, 4)
    assert ReconciliationLock.objects.count() == 0
    assert _audits(run) == [AUDIT_RUN_CANCEL_REQUESTED, AUDIT_RUN_CANCELLED]
    assert _events(run) == [("CANCELLED", dict.fromkeys(SUMMARY_KEYS, 0))]

    # And neither the sweep nor the killed attempt's late worker nor a second cancel brings it back or changes it.
    with time_machine.travel(killed_at + timedelta(seconds=LOCK_TTL_SECONDS + 5)):
        swept = reconciliation_abandoned_sweep()
    with pytest.raises(RunLockLostError):
        reconciliation_lock_refresh(run_id=run.pk, attempt=0)
    late = reconciliation_execute(run_id=run.pk, attempt=0, page_size=2, sleep=lambda _s: None)
    again = reconciliation_cancel(run=run, actor=operator)
    assert swept == {"resumed": [], "failed": [], "cancelled": []}
    assert (late.status, late.resumes, late.pages_pulled, late.finished_at) == (RunStatus.CANCELLED, 0, 2, finished_at)
    assert (again.status, again.finished_at) == (RunStatus.CANCELLED, finished_at)
    assert not OutboxMessage.objects.filter(topic=TOPIC_RUN_REQUESTED).exists()
    assert _audits(run) == [AUDIT_RUN_CANCEL_REQUESTED, AUDIT_RUN_CANCELLED]
    assert len(_events(run)) == 1


def test_a_live_worker_is_only_asked_to_stop_and_stops_at_its_next_page(
    sandbox, covered_policy, start_run, operator
) -> None:
    # Given a run whose lock was refreshed just under the threshold ago (a live worker between refreshes).
    policy = covered_policy(4)
    run = start_run(policy)

    with time_machine.travel(timezone.now() + timedelta(seconds=DEAD_WORKER_SECONDS - 1)):
        asked = reconciliation_cancel(run=run, actor=operator)

    # Then the cancel is only flagged: the run stays RUNNING with its lock …
    assert (asked.status, asked.cancel_requested_at is not None, asked.finished_at) == (RunStatus.RUNNING, True, None)
    assert ReconciliationLock.objects.filter(run=run).count() == 1
    assert _audits(run) == [AUDIT_RUN_CANCEL_REQUESTED]
    assert _events(run) == []

    # … and its worker ends it CANCELLED at its next page, as before.
    done = reconciliation_execute(run_id=run.pk, page_size=2, sleep=lambda _s: None)
    assert (done.status, done.pages_pulled) == (RunStatus.CANCELLED, 0)
    assert ReconciliationLock.objects.count() == 0
    assert _audits(run) == [AUDIT_RUN_CANCEL_REQUESTED]
    assert [status for status, _summary in _events(run)] == ["CANCELLED"]


def test_a_second_cancel_after_the_worker_died_ends_a_run_flagged_while_it_lived(start_run, operator) -> None:
    run = start_run(PolicyFactory())
    first = reconciliation_cancel(run=run, actor=operator)  # the worker is alive (just started): flagged only
    first_status, flagged_at = first.status, first.cancel_requested_at

    with time_machine.travel(timezone.now() + timedelta(seconds=DEAD_WORKER_SECONDS + 1)):
        second = reconciliation_cancel(run=run, actor=operator)

    assert (first_status, flagged_at is not None) == (RunStatus.RUNNING, True)
    assert (second.status, second.cancel_requested_at) == (RunStatus.CANCELLED, flagged_at)
    assert _audits(run) == [AUDIT_RUN_CANCEL_REQUESTED, AUDIT_RUN_CANCELLED]
    assert ReconciliationLock.objects.count() == 0
