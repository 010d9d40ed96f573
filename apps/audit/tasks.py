from __future__ import annotations

import logging

from celery import shared_task

from apps.audit.sealing import audit_verify, seal_all
from apps.audit.services import job_run

logger = logging.getLogger(__name__)


class AuditChainBrokenError(Exception):
    pass


@shared_task(name="audit.seal", ignore_result=True)
def seal() -> dict[str, int]:
    """Beat, every 10 s: extend each stream's hash chain over the events written since the last run.

    Not wrapped in `job_run`: at 8 640 runs a day its start/end rows would drown the job stream, and the
    seals it writes (with `sealed_at`) are its record."""
    return seal_all()


@shared_task(name="audit.verify", ignore_result=True)
def verify() -> bool:
    """Beat, nightly: recompute every chain; a problem is logged at ERROR and recorded as a failed job run."""
    with job_run("audit.verify") as run:
        report = audit_verify()
        run.counts.update({s.stream: s.sealed for s in report.streams})
        run.counts["problems"] = sum(s.problem_count for s in report.streams)
        for s in report.streams:
            logger.info("audit chain %s: %d sealed, head #%d %s", s.stream, s.sealed, s.head_seq, s.head_hash)
        if not report.ok:
            problems = [str(p) for s in report.streams for p in s.problems[:10]]
            logger.error("audit verification failed: %s", problems)
            raise AuditChainBrokenError("; ".join(problems))
    return True
