"""Celery entry points for webhooks: dispatch (sequencer + sends; nudged on commit, beat every second) and
retention (SPEC §10)."""

from __future__ import annotations

from celery import shared_task

# A dispatch task gives up after this long so beat and nudges interleave; slow endpoints keep their lease
# and finish on the pool's threads. It returns at once when a pass finds nothing to do (nothing to sequence,
# claim or wait for): an idle run must not hold a worker thread (beat queues one every second).
DISPATCH_TASK_SECONDS = 5.0


@shared_task(name="webhooks.dispatch", ignore_result=True)
def webhooks_dispatch() -> int:
    from django.core.cache import cache

    from apps.partners.webhooks.dispatch import NUDGE_FLAG, dispatch_forever

    cache.delete(NUDGE_FLAG)
    return dispatch_forever(max_seconds=DISPATCH_TASK_SECONDS, idle_seconds=0.2, idle_exit=True)


@shared_task(name="webhooks.retention", ignore_result=True)
def webhooks_retention() -> int:
    from apps.audit.services import job_run
    from apps.partners.webhooks.services import webhooks_retention as retention

    with job_run("webhooks.retention") as run:
        run.counts.update(retention())
        return int(run.counts["events"])
