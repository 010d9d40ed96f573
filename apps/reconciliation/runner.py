"""Running a reconciliation run end to end (issue 12, ADR 0040): pull every policy's roster page by page, then
match. Called by the Celery task and by `manage.py reconcile`; the insurer is called outside any
transaction, and each page is recorded in its own short one (`services.roster_page_record`)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import requests
import structlog
from django.utils import timezone

from apps.audit.models import JobStatus
from apps.audit.services import job_run_finish, job_run_start
from apps.reconciliation.contracts import (
    HEARTBEAT_SECONDS,
    JOB_RECONCILIATION,
    WAIT_SLICE_SECONDS,
    RunLockLostError,
)
from apps.reconciliation.matching import policy_match, policy_money_match
from apps.reconciliation.models import ReconciliationRun, RunStatus
from apps.reconciliation.pull import PullPolicy, RosterPullError
from apps.reconciliation.selectors import PolicyScope, keel_member_count, roster_read_at, run_policies
from apps.reconciliation.services import (
    insurer_read_note,
    reconciliation_finish,
    reconciliation_lock_refresh,
    roster_page_record,
)
from apps.reconciliation.sources import RosterUnsupportedError, roster_source_for

log = structlog.get_logger(__name__)

_JOB_STATUS = {
    RunStatus.COMPLETED: JobStatus.SUCCEEDED,
    RunStatus.FAILED: JobStatus.FAILED,
    RunStatus.CANCELLED: JobStatus.CANCELLED,
}


class _Cancelled(Exception):
    pass


def _request_id(run: ReconciliationRun, scope: PolicyScope) -> str:
    """Names a file insurer's roster request, and so its roster and statement files (stable across a resume)."""
    return f"run{run.pk}-policy{scope.policy_id}"


def _cancel_requested(run_id: int) -> bool:
    return ReconciliationRun.objects.filter(pk=run_id, cancel_requested_at__isnull=False).exists()


class _Heartbeat:
    """Keeps this worker's lock alive between recorded pages (ADR 0061): `beat()` refreshes it when
    `HEARTBEAT_SECONDS` have passed since the last refresh (by `clock`, monotonic), so the match of a large policy
    or a long statement never lets it lapse under a live worker; `beat(force=True)` refreshes now. Raises
    `RunLockLostError` (from the refresh) once the run is another worker's."""

    def __init__(self, *, run_id: int, attempt: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.run_id, self.attempt, self.clock = run_id, attempt, clock
        self.last = clock()

    def beat(self, *, force: bool = False) -> None:
        if force or self.clock() - self.last >= HEARTBEAT_SECONDS:
            reconciliation_lock_refresh(run_id=self.run_id, attempt=self.attempt)
            self.last = self.clock()

    def refreshed(self) -> None:
        """The lock was just refreshed elsewhere (a recorded page): count from now."""
        self.last = self.clock()


def _interruptible_wait(seconds: float, *, run_id: int, heartbeat: _Heartbeat, sleep: Callable[[float], None]) -> None:
    """Wait `seconds` (a `Retry-After`, a file insurer's poll) in slices of at most `WAIT_SLICE_SECONDS`, so a
    cancel ends the run within a second, not when the wait ends (newcomer trial: a 120 s `Retry-After` kept a
    cancelled run RUNNING).

    1. Refresh the lock (a long wait must not let it lapse under a live worker).
    2. Before each slice, one query for the run's cancel flag: set → raise `_Cancelled`.
    3. Sleep the slice through `sleep` (tests pass a fake clock); refresh the lock again every
       `HEARTBEAT_SECONDS` of waiting. Always sleeps at least once (a 0 s wait is one `sleep(0)`), and in all
       exactly `seconds` (the insurer is never asked again early).
    """
    heartbeat.beat(force=True)
    remaining, since_refresh = max(0.0, seconds), 0.0
    while True:
        if _cancel_requested(run_id):
            raise _Cancelled
        step = min(WAIT_SLICE_SECONDS, remaining)
        sleep(step)
        remaining -= step
        since_refresh += step
        if remaining <= 0:
            return
        if since_refresh >= HEARTBEAT_SECONDS:
            heartbeat.beat(force=True)
            since_refresh = 0.0


def _counts(run_id: int, summary: Counter[str] | None = None) -> dict[str, int]:
    run = ReconciliationRun.objects.get(pk=run_id)
    counts = {
        "pages_pulled": run.pages_pulled,
        "rows_pulled": run.rows_pulled,
        "rows_matched": run.rows_matched,
    }
    counts.update(summary or {})
    return counts


# long: the numbered run steps (job start, per-policy pull with Retry-After, match, money, finish, cancel and
# failure paths) with their docstring; a candidate to split per step, noted in issue 12.
def reconciliation_execute(
    *,
    run_id: int,
    attempt: int | None = None,
    page_size: int = 1000,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
    pull_policy: PullPolicy | None = None,
    on_page: Callable[[str, int], None] | None = None,
) -> ReconciliationRun:
    """Run (or resume) `run_id` to its end and return it. `on_page(policy_number, rows newly seen)` is called
    after each recorded page (the `reconcile --wait` command prints progress with it). `attempt`: the run's
    `resumes` the request was queued for (ADR 0061); a request for another attempt is stale (the sweep resumed
    the run since) and returns at once. None (`reconcile --wait`, tests): the run's current attempt.

    1. Write the job-run start event (outside any transaction).
    2. For each policy in scope, in id order, from its resume cursor: before each page, stop CANCELLED if a
       cancel was requested; record the page (upsert, counters, lock refresh, cursor) in one transaction.
    3. Match every policy's members, then its money against the insurer's statement (pulled the same way,
       streamed); discrepancies are written once per run and key; write the summary; end COMPLETED. Both
       matches judge Keel as it was when the run first asked for the policy's roster (`insurer_read_at`, noted
       before the first page of each attempt, the earliest kept): a difference involving a Keel row written
       since counts as `changed_during_run` and is not written (ADR 0063).
    4. A pull error ends the run FAILED with the error kept; a lost lock (another run took over after this
       worker stalled, or the sweep resumed the run for a new worker) ends only the job-run event, leaving the
       run to its new owner. Every wait is interruptible (`_interruptible_wait`): a cancel ends it within a
       second; between pages the lock is refreshed at least every `HEARTBEAT_SECONDS`.
    5. End the run (with one `reconciliation.completed` partner event per employer, its own figures) and
       write the job-run end event with status, counts and error.
    """
    run = ReconciliationRun.objects.select_related("insurer").get(pk=run_id)
    if run.status != RunStatus.RUNNING:
        return run
    if attempt is not None and attempt != run.resumes:
        log.info("reconciliation.stale_request", run_id=run_id, attempt=attempt, current=run.resumes)
        return run
    attempt = run.resumes
    heartbeat = _Heartbeat(run_id=run_id, attempt=attempt)
    job = job_run_start(
        job=JOB_RECONCILIATION,
        params={
            "run_id": run.pk,
            "insurer": run.insurer.code,
            "employer_id": run.employer_id,
            "policy_id": run.policy_id,
            "attempt": attempt,
        },
    )
    policies = run_policies(run)

    def wait(seconds: float) -> None:
        _interruptible_wait(seconds, run_id=run_id, heartbeat=heartbeat, sleep=sleep)

    ReconciliationRun.objects.filter(pk=run_id).update(policies_total=len(policies))
    status, error, summary = RunStatus.COMPLETED, "", Counter[str]()
    by_employer: dict[int, Counter[str]] = {}
    try:
        try:
            source = roster_source_for(run.insurer, session=session, sleep=wait, policy=pull_policy)
        except RosterUnsupportedError as exc:
            raise RosterPullError(str(exc)) from exc
        for scope in policies:
            key = str(scope.policy_id)
            if key in run.resume_cursors and run.resume_cursors[key] is None:
                continue  # pulled completely before this worker resumed the run
            fresh = key not in run.resume_cursors
            # Before the insurer is asked: the match judges Keel as it was then (ADR 0063), the earliest ask of
            # every attempt of this run.
            insurer_read_note(run_id=run_id, policy_id=scope.policy_id, at=timezone.now())
            pages = source.pages(
                policy_number=scope.policy_number,
                cursor=run.resume_cursors.get(key) or "",
                page_size=page_size,
                request_id=_request_id(run, scope),
            )
            for page in pages:
                if _cancel_requested(run_id):
                    raise _Cancelled
                expected = 0
                if fresh:
                    # The policy's share of `rows_expected` (ADR 0045): what the insurer says it holds, else
                    # what Keel covers; added once, with the policy's first page.
                    expected = page.total if page.total is not None else keel_member_count(policy_id=scope.policy_id)
                    fresh = False
                seen = roster_page_record(
                    run_id=run_id,
                    insurer_id=run.insurer_id,
                    policy_id=scope.policy_id,
                    members=page.members,
                    next_cursor=page.next_cursor,
                    rows_expected=expected,
                    attempt=attempt,
                )
                heartbeat.refreshed()  # the page's transaction refreshed the lock
                if on_page is not None:
                    on_page(scope.policy_number, seen)
        if _cancel_requested(run_id):
            raise _Cancelled
        heartbeat.beat(force=True)
        ReconciliationRun.objects.filter(pk=run_id).update(rows_matched=0)
        for scope in policies:
            # One time per policy for both matches: when the run first asked for the policy's roster. A REST or
            # SOAP statement is read after it, a file insurer's was written with it (ADR 0063).
            as_of = roster_read_at(run_id=run_id, policy_id=scope.policy_id)
            counts = policy_match(run=run, scope=scope, heartbeat=heartbeat.beat, as_of=as_of)
            statement = source.statement(
                policy_number=scope.policy_number,
                page_size=page_size,
                request_id=_request_id(run, scope),
            )
            counts.update(
                policy_money_match(run=run, scope=scope, statement=statement, heartbeat=heartbeat.beat, as_of=as_of)
            )
            summary.update(counts)
            by_employer.setdefault(scope.employer_id, Counter()).update(counts)
            heartbeat.beat(force=True)
    except _Cancelled:
        status = RunStatus.CANCELLED
    except RunLockLostError as exc:
        log.warning("reconciliation.lock_lost", run_id=run_id)
        job_run_finish(job, status=JobStatus.FAILED, counts=_counts(run_id), error=str(exc))
        return ReconciliationRun.objects.get(pk=run_id)
    except RosterPullError as exc:
        status, error = RunStatus.FAILED, str(exc)
    except Exception as exc:
        reconciliation_finish(
            run_id=run_id, status=RunStatus.FAILED, summary=_counts(run_id), error=repr(exc), attempt=attempt
        )
        job_run_finish(job, status=JobStatus.FAILED, counts=_counts(run_id), error=repr(exc))
        raise
    totals = _counts(run_id, summary)
    if not reconciliation_finish(
        run_id=run_id, status=status, summary=totals, error=error, employer_counts=by_employer, attempt=attempt
    ):
        # Ended meanwhile (a takeover, the sweep), or resumed for another worker: its owner reports it.
        status, error = RunStatus.FAILED, f"run {run_id} was ended or resumed elsewhere before this worker finished"
    job_run_finish(job, status=_JOB_STATUS[status], counts=totals, error=error)
    return ReconciliationRun.objects.get(pk=run_id)
