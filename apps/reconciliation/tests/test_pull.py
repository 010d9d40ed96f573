"""A run end to end against the sandbox insurer over real HTTP (live_server): pull, resume, cancel, match."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
import time_machine
from django.utils import timezone

from apps.audit.models import JobRunEvent
from apps.endorsements.tests.factories import PolicyFactory
from apps.insurers.sandbox.roster import sandbox_roster_change, sandbox_roster_control, sandbox_roster_drop
from apps.reconciliation.api.serializers import ReconciliationRunSerializer
from apps.reconciliation.contracts import LOCK_TTL_SECONDS, SUMMARY_KEYS
from apps.reconciliation.models import Discrepancy, InsurerRosterEntry, ReconciliationRun, RunStatus
from apps.reconciliation.pull import PullPolicy, RosterPullError, rest_roster_pages
from apps.reconciliation.runner import reconciliation_execute
from apps.reconciliation.services import reconciliation_cancel
from apps.reconciliation.tests.conftest import SANDBOX, WorkerKilled, die, member

pytestmark = pytest.mark.django_db(transaction=True)


def _kinds(run: ReconciliationRun) -> list[tuple[str, str, str]]:
    return sorted(Discrepancy.objects.filter(run=run).values_list("kind", "employee_code", "field"))


def test_clean_roster_matches_every_member_with_no_discrepancy(sandbox, covered_policy, start_run, fake_clock) -> None:
    policy = covered_policy(10)
    run = start_run(policy)

    done = reconciliation_execute(run_id=run.pk, page_size=3, sleep=fake_clock)

    assert done.status == RunStatus.COMPLETED
    assert (done.pages_pulled, done.rows_pulled, done.rows_matched) == (4, 10, 10)
    assert (done.policies_total, done.policies_done) == (1, 1)
    assert done.summary == {"pages_pulled": 4, "rows_pulled": 10, "rows_matched": 10, "matched": 10}
    assert Discrepancy.objects.count() == 0
    assert fake_clock.waits == []
    events = list(JobRunEvent.objects.filter(job="reconciliation.run").order_by("id").values_list("phase", "status"))
    assert events == [("start", "running"), ("end", "succeeded")]


def test_each_drift_produces_exactly_its_discrepancy(sandbox, covered_policy, start_run, fake_clock) -> None:
    policy = covered_policy(6)
    number = policy.policy_number
    sandbox_roster_drop(code=SANDBOX, policy_number=number, employee_code="E00001")
    sandbox_roster_change(code=SANDBOX, policy_number=number, employee_code="E00002", date_of_birth=date(1980, 1, 1))
    sandbox_roster_change(code=SANDBOX, policy_number=number, employee_code="E00003", sum_insured=300_000_00)
    from apps.insurers.sandbox.roster import sandbox_roster_load

    sandbox_roster_load(code=SANDBOX, policy_number=number, members=[member("X99999")])
    run = start_run(policy)

    done = reconciliation_execute(run_id=run.pk, page_size=4, sleep=fake_clock)

    assert done.status == RunStatus.COMPLETED
    assert _kinds(done) == [
        ("field_mismatch", "E00002", "date_of_birth"),
        ("field_mismatch", "E00003", "sum_insured"),
        ("missing_at_insurer", "E00001", ""),
        ("missing_internally", "X99999", ""),
    ]
    dob = Discrepancy.objects.get(field="date_of_birth")
    assert (dob.keel_value, dob.insurer_value, dob.severity) == ("1990-05-17", "1980-01-01", "medium")
    si = Discrepancy.objects.get(field="sum_insured")
    assert (si.keel_value, si.insurer_value, si.severity) == (500_000_00, 300_000_00, "high")
    assert done.summary["matched"] == 3
    assert done.summary["missing_at_insurer"] == done.summary["missing_internally"] == 1
    assert done.summary["field_mismatch"] == 2


@pytest.mark.parametrize("http_date", [False, True])
def test_429_on_every_third_page_completes_and_waits_what_was_asked(
    sandbox, covered_policy, start_run, fake_clock, http_date
) -> None:
    policy = covered_policy(20)
    sandbox_roster_control(code=SANDBOX, throttle_every=3, retry_after_seconds=7, retry_after_http_date=http_date)
    run = start_run(policy)

    done = reconciliation_execute(run_id=run.pk, page_size=2, sleep=fake_clock)

    assert done.status == RunStatus.COMPLETED
    assert (done.pages_pulled, done.rows_pulled, done.rows_matched) == (10, 20, 20)
    # Pages 3, 6 and 9 were refused once each; the waits honour the 7 s asked (an HTTP date is rounded up to the
    # next whole second by the sandbox, less the time the answer took to arrive), slept in slices of at most 1 s
    # so a cancel is seen at once (each wait on its own: `test_the_puller_waits_at_least_each_retry_after`).
    assert sum(fake_clock.waits) >= 3 * (6.5 if http_date else 7)
    assert max(fake_clock.waits) <= 1.0
    if not http_date:
        assert fake_clock.waits == [1.0] * 21
    assert InsurerRosterEntry.objects.count() == 20


@pytest.mark.parametrize("http_date", [False, True])
def test_the_puller_waits_at_least_each_retry_after(sandbox, covered_policy, fake_clock, http_date) -> None:
    policy = covered_policy(6)
    sandbox_roster_control(code=SANDBOX, throttle_every=3, retry_after_seconds=7, retry_after_http_date=http_date)

    pages = list(
        rest_roster_pages(endpoint=sandbox.endpoint, policy_number=policy.policy_number, page_size=2, sleep=fake_clock)
    )

    assert sum(len(page.members) for page in pages) == 6
    assert len(fake_clock.waits) == 1  # the third request was refused once
    assert fake_clock.waits[0] >= (6.5 if http_date else 7)


def test_transient_failures_are_retried_with_backoff(sandbox, covered_policy, start_run, fake_clock) -> None:
    policy = covered_policy(4)
    sandbox_roster_control(code=SANDBOX, failures=2)
    run = start_run(policy)

    done = reconciliation_execute(run_id=run.pk, page_size=3, sleep=fake_clock)

    assert done.status == RunStatus.COMPLETED
    assert (done.pages_pulled, done.rows_pulled) == (2, 4)
    assert fake_clock.waits == [0.0, 0.0]  # the sandbox says `Retry-After: 0`


def test_retry_budget_spent_fails_the_run_with_the_error(sandbox, covered_policy, start_run, fake_clock) -> None:
    policy = covered_policy(4)
    sandbox_roster_control(code=SANDBOX, failures=10)
    run = start_run(policy)

    done = reconciliation_execute(run_id=run.pk, page_size=3, sleep=fake_clock, pull_policy=PullPolicy(max_attempts=3))

    assert done.status == RunStatus.FAILED
    assert "after 3 attempts" in done.error
    assert len(fake_clock.waits) == 2
    end = JobRunEvent.objects.filter(job="reconciliation.run", phase="end").get()
    assert (end.status, "after 3 attempts" in end.error) == ("failed", True)


def test_retry_after_beyond_the_allowed_wait_fails_the_pull(sandbox, covered_policy, fake_clock) -> None:
    policy = covered_policy(4)
    sandbox_roster_control(code=SANDBOX, throttle_every=1, retry_after_seconds=600)

    with pytest.raises(RosterPullError, match="asked to wait 600"):
        list(
            rest_roster_pages(
                endpoint=sandbox.endpoint, policy_number=policy.policy_number, page_size=3, sleep=fake_clock
            )
        )
    assert fake_clock.waits == []


def test_cancel_mid_run_ends_cancelled_with_partial_counts(sandbox, covered_policy, start_run, operator) -> None:
    policy = covered_policy(10)
    sandbox_roster_control(code=SANDBOX, throttle_every=3)
    run = start_run(policy)

    def cancel_while_waiting(seconds: float) -> None:
        reconciliation_cancel(run=run, actor=operator)

    done = reconciliation_execute(run_id=run.pk, page_size=2, sleep=cancel_while_waiting)

    assert done.status == RunStatus.CANCELLED
    assert (done.pages_pulled, done.rows_pulled, done.rows_matched) == (2, 4, 0)
    assert done.summary == {"pages_pulled": 2, "rows_pulled": 4, "rows_matched": 0}
    assert Discrepancy.objects.count() == 0
    end = JobRunEvent.objects.filter(job="reconciliation.run", phase="end").get()
    assert end.status == "cancelled"


def test_killed_worker_resumes_without_double_counting(sandbox, covered_policy, start_run) -> None:
    policy = covered_policy(10)
    sandbox_roster_control(code=SANDBOX, throttle_every=3)
    run = start_run(policy)

    with pytest.raises(WorkerKilled):
        reconciliation_execute(run_id=run.pk, page_size=2, sleep=die)
    run.refresh_from_db()
    assert (run.status, run.pages_pulled, run.rows_pulled) == (RunStatus.RUNNING, 2, 4)

    done = reconciliation_execute(run_id=run.pk, page_size=2, sleep=lambda s: None)

    assert done.status == RunStatus.COMPLETED
    assert (done.pages_pulled, done.rows_pulled, done.rows_matched) == (5, 10, 10)


def test_killed_worker_lock_expires_and_a_new_run_proceeds(sandbox, covered_policy, start_run) -> None:
    policy = covered_policy(4)
    sandbox_roster_control(code=SANDBOX, throttle_every=2)
    dead = start_run(policy)

    with pytest.raises(WorkerKilled):
        reconciliation_execute(run_id=dead.pk, page_size=2, sleep=die)

    with time_machine.travel(timezone.now() + timedelta(seconds=LOCK_TTL_SECONDS + 5)):
        fresh = start_run(policy)
    done = reconciliation_execute(run_id=fresh.pk, page_size=2, sleep=lambda s: None)

    dead.refresh_from_db()
    assert dead.status == RunStatus.FAILED
    assert (done.status, done.rows_pulled, done.rows_matched) == (RunStatus.COMPLETED, 4, 4)


def test_operator_run_sends_each_partner_only_its_own_figures(sandbox, covered_policy, start_run, fake_clock) -> None:
    from apps.partners.webhooks.models import Event

    first = covered_policy(3)
    second = PolicyFactory(insurer=first.insurer)
    covered_policy(2, policy=second)
    sandbox_roster_drop(code=SANDBOX, policy_number=second.policy_number, employee_code="E00000")
    run = start_run(first, employer_id=None)

    done = reconciliation_execute(run_id=run.pk, page_size=2, sleep=fake_clock)

    assert done.status == RunStatus.COMPLETED
    assert sorted(done.employer_ids) == sorted([first.employer_id, second.employer_id])
    events = {e.employer_id: e for e in Event.objects.filter(type="reconciliation.completed")}
    assert {e.partner_id for e in events.values()} == {first.employer.partner_id, second.employer.partner_id}
    zeros = dict.fromkeys(SUMMARY_KEYS, 0)
    assert events[first.employer_id].data["summary"] == {**zeros, "matched": 3}
    assert events[second.employer_id].data["summary"] == {**zeros, "matched": 1, "missing_at_insurer": 1}
    # The run's own summary at the API is the same shape, with the two employers' figures added up.
    assert ReconciliationRunSerializer(done).data["summary"] == {**zeros, "matched": 4, "missing_at_insurer": 1}
    assert {(e.data["id"], e.data["status"], e.data["insurer"]) for e in events.values()} == {
        (run.pk, "COMPLETED", "sandbox-rest")
    }


def test_reconcile_command_waits_and_prints_progress_and_summary(sandbox, covered_policy) -> None:
    import io

    from django.core.management import call_command

    policy = covered_policy(3)
    sandbox_roster_drop(code=SANDBOX, policy_number=policy.policy_number, employee_code="E00002")
    out = io.StringIO()

    call_command("reconcile", "--insurer", "sandbox-rest", "--employer", str(policy.employer_id), "--wait", stdout=out)

    text = out.getvalue()
    run = ReconciliationRun.objects.get()
    assert f"run {run.pk} COMPLETED" in text
    assert "page 1: policy" in text
    assert "  missing_at_insurer: 1" in text
    assert "  matched: 2" in text
