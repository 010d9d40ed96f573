"""Celery entry points of reconciliation (thin: each calls the runner or a service)."""

from __future__ import annotations

import structlog
from celery import shared_task

from apps.common.actors import Actor
from apps.insurers.selectors import insurers_active
from apps.reconciliation.contracts import RunOverlapError
from apps.reconciliation.runner import reconciliation_execute
from apps.reconciliation.selectors import scope_employer_ids
from apps.reconciliation.services import reconciliation_abandoned_sweep, reconciliation_start, roster_history_purge
from apps.reconciliation.sources import RosterUnsupportedError, roster_source_for

log = structlog.get_logger(__name__)

QUEUE = "reconciliation"


# A run's I/O is bounded by the puller's per-request timeouts and retry budget; the hard limit only stops a
# worker that hangs anyway (its lock then expires and a new run can proceed).
@shared_task(name="reconciliation.run", ignore_result=True, soft_time_limit=3300, time_limit=3600)
def reconciliation_run(run_id: int, attempt: int | None = None) -> str:
    """Run (or resume, after a redelivery or the abandoned-run sweep) one reconciliation run to its end; returns
    its status. `attempt`: the run's `resumes` it was queued for; a stale request (the run was resumed since)
    does nothing (ADR 0061). None (a request queued before attempts existed): the current attempt."""
    return reconciliation_execute(run_id=run_id, attempt=attempt).status


@shared_task(name="reconciliation.nightly", ignore_result=True)
def reconciliation_nightly() -> dict[str, int | str]:
    """Beat, nightly: one operator run per active insurer with a roster (REST, SOAP, file) over all its
    employers (skipped, not queued twice, while a run for any of them is still in progress; skipped with a log
    line when its configuration cannot serve a roster). Returns `{insurer code: run id | "skipped"}`."""
    started: dict[str, int | str] = {}
    actor = Actor.system("reconciliation.nightly")
    for insurer in insurers_active():
        try:
            roster_source_for(insurer)
        except RosterUnsupportedError as exc:
            log.warning("reconciliation.nightly_unsupported", insurer=insurer.code, error=str(exc))
            continue
        employer_ids = scope_employer_ids(insurer_id=insurer.pk, employer_id=None)
        if not employer_ids:
            continue
        try:
            run = reconciliation_start(
                insurer_id=insurer.pk,
                employer_ids=employer_ids,
                employer_id=None,
                policy_id=None,
                partner_id=None,
                actor=actor,
            )
        except RunOverlapError as exc:
            log.info("reconciliation.nightly_skipped", insurer=insurer.code, running_id=exc.running_run_id)
            started[insurer.code] = "skipped"
            continue
        started[insurer.code] = run.pk
    return started


@shared_task(name="reconciliation.sweep_abandoned", ignore_result=True)
def reconciliation_sweep_abandoned() -> dict[str, list[int]]:
    """Beat, every minute: resume the runs whose worker stopped heartbeating, at most `MAX_RESUMES` times each,
    ending one FAILED when another run took its scope meanwhile or its resumes are spent (ADR 0061). Returns
    `{"resumed": [ids], "failed": [ids], "cancelled": [ids]}`."""
    return reconciliation_abandoned_sweep()


@shared_task(name="reconciliation.history_purge", ignore_result=True)
def reconciliation_history_purge() -> int:
    """Beat, daily: drop insurer-roster changes past their 400 days."""
    return roster_history_purge()
