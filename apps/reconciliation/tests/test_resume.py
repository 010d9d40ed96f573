"""A run whose worker stopped is resumed by the sweep, not lost (ADR 0061, SPEC §1: nothing is lost when a worker
goes away): it continues from its resume cursors with exact counts, an earlier attempt's worker cannot write
again, a run whose scope another run took meanwhile ends FAILED, and resumes are bounded. A cancel interrupts a
long `Retry-After` at once."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
import time_machine
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.endorsements.tests.factories import PolicyFactory
from apps.insurers.sandbox.roster import sandbox_roster_control, sandbox_roster_drop
from apps.outbox.models import OutboxMessage
from apps.outbox.testing import drain
from apps.partners.webhooks.models import Event
from apps.reconciliation.contracts import (
    AUDIT_RUN_RESUMED,
    HEARTBEAT_SECONDS,
    LOCK_TTL_SECONDS,
    MAX_RESUMES,
    TOPIC_RUN_REQUESTED,
    WAIT_SLICE_SECONDS,
    RunLockLostError,
)
from apps.reconciliation.models import Discrepancy, ReconciliationLock, ReconciliationRun, RunStatus
from apps.reconciliation.runner import reconciliation_execute
from apps.reconciliation.services import (
    reconciliation_abandoned_sweep,
    reconciliation_cancel,
    reconciliation_lock_refresh,
)
from apps.reconciliation.tests.conftest import SANDBOX, WorkerKilled, die

pytestmark = pytest.mark.django_db(transaction=True)


def _after_ttl():
    """A moment when every lock taken now has lapsed (its worker stopped refreshing)."""
    return time_machine.travel(timezone.now() + timedelta(seconds=LOCK_TTL_SECONDS + 5))


def _queued_attempts(run: ReconciliationRun) -> list[tuple]:
    """`reconciliation.run` tasks the outbox relay queues for the run, as `(args)` tuples."""
    with mock.patch("apps.reconciliation.tasks.reconciliation_run.apply_async") as queued:
        drain()
    return [call.kwargs["args"] for call in queued.call_args_list if call.kwargs["args"][0] == run.pk]


def test_a_run_whose_worker_died_is_resumed_and_completes_with_exact_counts(sandbox, covered_policy, start_run) -> None:
    # Given a run of 10 members (drifted: one dropped at the insurer) whose worker died after 2 of 5 pages.
    policy = covered_policy(10)
    sandbox_roster_drop(code=SANDBOX, policy_number=policy.policy_number, employee_code="E00007")
    sandbox_roster_control(code=SANDBOX, throttle_every=3)
    run = start_run(policy)
    with pytest.raises(WorkerKilled):
        reconciliation_execute(run_id=run.pk, page_size=2, sleep=die)

    # When the sweep finds its lock lapsed, and the outbox queues the run again for the new attempt.
    with _after_ttl():
        swept = reconciliation_abandoned_sweep()
        again = reconciliation_abandoned_sweep()  # already resumed: its new lock is live
        requested = list(OutboxMessage.objects.filter(topic=TOPIC_RUN_REQUESTED).values_list("key", "payload"))
        queued = _queued_attempts(run)
    done = reconciliation_execute(run_id=run.pk, attempt=queued[-1][1], page_size=2, sleep=lambda _s: None)

    # Then it completed from where it stopped, every row counted once, one event per employer.
    assert swept == {"resumed": [run.pk], "failed": [], "cancelled": []}
    assert again == {"resumed": [], "failed": [], "cancelled": []}
    assert queued == [(run.pk, 1)]
    assert (done.status, done.resumes, done.error) == (RunStatus.COMPLETED, 1, "")
    assert (done.pages_pulled, done.rows_pulled, done.rows_matched, done.policies_done) == (5, 9, 9, 1)
    assert done.summary["matched"] == 9
    assert done.summary["missing_at_insurer"] == 1
    assert list(Discrepancy.objects.filter(run=done).values_list("kind", "employee_code")) == [
        ("missing_at_insurer", "E00007")
    ]
    assert Event.objects.filter(object_id=str(run.pk), type="reconciliation.completed").count() == 1
    assert ReconciliationLock.objects.count() == 0
    resumed = AuditEvent.objects.get(action=AUDIT_RUN_RESUMED, object_id=str(run.pk))
    assert (resumed.before, resumed.after["resumes"]) == ({"resumes": 0}, 1)
    assert requested == [(f"reconciliation-run-{run.pk}-resume-1", {"run_id": run.pk, "attempt": 1})]


def test_a_worker_of_an_earlier_attempt_can_no_longer_write(sandbox, covered_policy, start_run) -> None:
    policy = covered_policy(4)
    sandbox_roster_control(code=SANDBOX, throttle_every=2)
    run = start_run(policy)
    with pytest.raises(WorkerKilled):
        reconciliation_execute(run_id=run.pk, page_size=2, sleep=die)
    with _after_ttl():
        reconciliation_abandoned_sweep()

    # The stalled worker of attempt 0 wakes up: its heartbeat finds no lock of its attempt, and a stale request
    # for attempt 0 does nothing.
    with pytest.raises(RunLockLostError):
        reconciliation_lock_refresh(run_id=run.pk, attempt=0)
    stale = reconciliation_execute(run_id=run.pk, attempt=0, page_size=2, sleep=lambda _s: None)

    assert (stale.status, stale.resumes, stale.pages_pulled) == (RunStatus.RUNNING, 1, 1)
    done = reconciliation_execute(run_id=run.pk, attempt=1, page_size=2, sleep=lambda _s: None)
    assert (done.status, done.pages_pulled, done.rows_pulled, done.rows_matched) == (RunStatus.COMPLETED, 2, 4, 4)


def test_a_run_whose_scope_another_run_took_meanwhile_ends_failed(start_run) -> None:
    # Given an operator run over two employers whose worker died, and a run for one of them started after
    # its lock lapsed (it took that employer's lock over).
    first = PolicyFactory()
    second = PolicyFactory(insurer=first.insurer)
    dead = start_run(first, employer_id=None)
    with _after_ttl():
        newer = start_run(second)

        # When the sweep looks at the dead run.
        swept = reconciliation_abandoned_sweep()

    # Then it is not resumed (the newer run may have pulled its policies since): FAILED, naming the newer run,
    # its other lock released; the newer run is untouched.
    dead.refresh_from_db()
    newer.refresh_from_db()
    assert swept == {"resumed": [], "failed": [dead.pk], "cancelled": []}
    assert dead.status == RunStatus.FAILED
    assert dead.error == (
        f"abandoned: no heartbeat for {LOCK_TTL_SECONDS} s (its worker stopped); "
        f"not resumed: run {newer.pk} took over its scope"
    )
    assert (newer.status, newer.resumes) == (RunStatus.RUNNING, 0)
    assert list(ReconciliationLock.objects.values_list("run_id", "employer_id")) == [(newer.pk, second.employer_id)]
    assert dead.resumes == 0
    assert not OutboxMessage.objects.filter(topic=TOPIC_RUN_REQUESTED).exists()
    assert Event.objects.filter(object_id=str(dead.pk), type="reconciliation.completed").count() == 2


def test_resumes_are_bounded_then_the_run_ends_failed_saying_so(start_run) -> None:
    run = start_run(PolicyFactory())
    outcomes = []
    moment = timezone.now()
    for _ in range(MAX_RESUMES + 1):
        # Each attempt's worker dies before its first page: its lock lapses again.
        moment += timedelta(seconds=LOCK_TTL_SECONDS + 5)
        with time_machine.travel(moment):
            outcomes.append(reconciliation_abandoned_sweep())
    with time_machine.travel(moment):
        queued = _queued_attempts(run)  # the outbox rows are due from their moment on

    run.refresh_from_db()
    assert outcomes == [{"resumed": [run.pk], "failed": [], "cancelled": []}] * MAX_RESUMES + [
        {"resumed": [], "failed": [run.pk], "cancelled": []}
    ]
    assert (run.status, run.resumes) == (RunStatus.FAILED, MAX_RESUMES)
    assert run.error == (
        f"abandoned: no heartbeat for {LOCK_TTL_SECONDS} s (its worker stopped); "
        f"not resumed again: it was resumed {MAX_RESUMES} times, the most allowed"
    )
    assert AuditEvent.objects.filter(action=AUDIT_RUN_RESUMED, object_id=str(run.pk)).count() == MAX_RESUMES
    assert sorted(queued) == [(run.pk, n) for n in range(1, MAX_RESUMES + 1)]
    assert ReconciliationLock.objects.count() == 0


def test_a_dead_run_whose_cancel_was_asked_ends_cancelled_not_resumed(start_run, operator) -> None:
    run = start_run(PolicyFactory())
    reconciliation_cancel(run=run, actor=operator)

    with _after_ttl():
        swept = reconciliation_abandoned_sweep()

    run.refresh_from_db()
    assert swept == {"resumed": [], "failed": [], "cancelled": [run.pk]}
    assert (run.status, run.resumes) == (RunStatus.CANCELLED, 0)


def test_cancel_interrupts_a_long_retry_after_at_once(sandbox, covered_policy, start_run, operator) -> None:
    # Given an insurer that throttles the third page with `Retry-After: 100`.
    policy = covered_policy(10)
    sandbox_roster_control(code=SANDBOX, throttle_every=3, retry_after_seconds=100)
    run = start_run(policy)
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 2:  # two seconds into the wait, the partner cancels
            reconciliation_cancel(run=run, actor=operator)

    # When the run waits and is cancelled.
    done = reconciliation_execute(run_id=run.pk, page_size=2, sleep=sleep)

    # Then it ends CANCELLED after the slice the cancel arrived in, not 100 s later, keeping what it pulled.
    assert done.status == RunStatus.CANCELLED
    assert slept == [WAIT_SLICE_SECONDS, WAIT_SLICE_SECONDS]
    assert (done.pages_pulled, done.rows_pulled) == (2, 4)
    assert ReconciliationLock.objects.count() == 0


def test_a_long_wait_is_sliced_and_keeps_the_lock_alive(sandbox, covered_policy, start_run, time_machine) -> None:
    policy = covered_policy(4)
    sandbox_roster_control(code=SANDBOX, throttle_every=2, retry_after_seconds=100)
    run = start_run(policy)
    time_machine.move_to(timezone.now(), tick=False)
    slices: list[float] = []
    lock_left: list[float] = []

    def sleep(seconds: float) -> None:
        slices.append(seconds)
        time_machine.shift(seconds)  # the wall clock moves as if the worker slept
        lock = ReconciliationLock.objects.get(run=run)
        lock_left.append((lock.expires_at - timezone.now()).total_seconds())

    done = reconciliation_execute(run_id=run.pk, page_size=2, sleep=sleep)

    assert done.status == RunStatus.COMPLETED
    assert slices == [WAIT_SLICE_SECONDS] * 100  # the 100 s asked, all of it, in 1 s slices
    # Refreshed before the wait and every 15 s of it: the lock never comes near lapsing under a live worker.
    assert min(lock_left) >= LOCK_TTL_SECONDS - HEARTBEAT_SECONDS
