from __future__ import annotations

import logging

from celery import shared_task

from apps.audit.services import job_run
from apps.ledger.selectors import ledger_verify

log = logging.getLogger(__name__)


class LedgerVerificationFailed(Exception):
    pass


@shared_task(name="ledger.verify", ignore_result=True)
def verify() -> bool:
    """Nightly (beat, 02:30): `ledger_verify` inside an audit job run; any difference fails the run (and is
    logged at ERROR), so it shows up in the job stream and the ops dashboard."""
    with job_run("ledger_verify", {"trigger": "beat"}) as run:
        report = ledger_verify()
        run.counts.update(
            {
                "accounts": report.accounts,
                "transactions": report.transactions,
                "holds": report.holds,
                "problems": len(report.problems),
            }
        )
        if not report.ok:
            log.error("ledger verification failed: %s", report.problems[:20])
            raise LedgerVerificationFailed("; ".join(report.problems[:20]))
    return True
