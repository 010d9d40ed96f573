"""Beat entry points (thin: each calls a service inside a job-run record)."""

from __future__ import annotations

from celery import shared_task

from apps.audit.services import job_run
from apps.common.actors import Actor
from apps.endorsements import services


@shared_task(name="endorsements.schedule", ignore_result=True)
def schedule_windows() -> int:
    # Runs every second: no job-run record per tick (it would dwarf the real events); dispatches are audited.
    return services.scheduler_tick(actor=Actor.system("endorsements.schedule"))


@shared_task(name="endorsements.activate_due", ignore_result=True)
def activate_due() -> None:
    with job_run("endorsements.activate_due") as run:
        run.counts["activated"] = services.endorsements_activate_due(actor=Actor.system("endorsements.activate_due"))


@shared_task(name="endorsements.expire_parked", ignore_result=True)
def expire_parked() -> None:
    with job_run("endorsements.expire_parked") as run:
        run.counts["failed"] = services.endorsements_expire_parked(actor=Actor.system("endorsements.expire_parked"))


@shared_task(name="endorsements.rollup_compact", ignore_result=True)
def rollup_compact() -> int:
    # Every 30 s, no job-run record per tick (as the scheduler): folds the analytics rollup's deltas (ADR 0047).
    from apps.endorsements.rollup import rollup_compact as compact

    return compact()[0]
