"""Names other code uses to talk about reconciliation: audit actions, job names, errors (issue 12)."""

from __future__ import annotations

JOB_RECONCILIATION = "reconciliation.run"
AUDIT_RUN_STARTED = "reconciliation.run_started"
AUDIT_RUN_CANCEL_REQUESTED = "reconciliation.run_cancel_requested"
AUDIT_DISCREPANCY_RESOLVED = "reconciliation.discrepancy_resolved"

# A run's lock lives this long after its last refresh; a worker refreshes it after every page and before
# every retry wait (at most `PullPolicy.max_wait_seconds`, 120 s, plus one request's timeouts).
LOCK_TTL_SECONDS = 300


class RunOverlapError(Exception):
    """Another live run holds the lock of an `(insurer, employer)` this run needs (SPEC §8: 409)."""

    def __init__(self, *, running_run_id: int) -> None:
        super().__init__(f"reconciliation run {running_run_id} is in progress for this scope")
        self.running_run_id = running_run_id


class RunLockLostError(Exception):
    """This run's lock expired and another run took it over: stop without writing more."""


class ResolutionAction:
    """Actions of `POST /discrepancies/{id}/resolve` (ADR 0040). Keel's data is the source of truth unless the
    operator decides otherwise; `create_*` go through the normal public intake (validation, pricing, holds)."""

    IGNORE = "ignore"
    FLAG_FOR_FINANCE = "flag_for_finance"
    CREATE_ADDITION = "create_addition"
    CREATE_DELETION = "create_deletion"
    CREATE_CORRECTION = "create_correction"
    RESEND = "resend"
    REQUEST_INSURER_DELETION = "request_insurer_deletion"


RESOLUTION_ACTIONS = (
    ResolutionAction.IGNORE,
    ResolutionAction.FLAG_FOR_FINANCE,
    ResolutionAction.CREATE_ADDITION,
    ResolutionAction.CREATE_DELETION,
    ResolutionAction.CREATE_CORRECTION,
    ResolutionAction.RESEND,
    ResolutionAction.REQUEST_INSURER_DELETION,
)
# Outbox topic of a `resend` or a `request_insurer_deletion`: payload {"discrepancy_id"}; the consumer sends
# Keel's member (or a deletion of the insurer's) to the insurer.
TOPIC_RESEND = "reconciliation.resend"
# Outbox topic of a started run: payload {"run_id"}; the consumer queues the run's Celery task. Written with the
# run (ADR 0058): a broker that is down when the run is created delays it, never loses it or costs a 500.
TOPIC_RUN_REQUESTED = "reconciliation.run_requested"
MONEY_KINDS = frozenset({"amount_mismatch", "charge_missing"})
# The actions each kind takes besides `ignore`.
ACTIONS_OF_KIND = {
    "missing_at_insurer": frozenset({ResolutionAction.CREATE_DELETION, ResolutionAction.RESEND}),
    "missing_internally": frozenset({ResolutionAction.CREATE_ADDITION, ResolutionAction.REQUEST_INSURER_DELETION}),
    "field_mismatch": frozenset({ResolutionAction.CREATE_CORRECTION, ResolutionAction.RESEND}),
    "amount_mismatch": frozenset({ResolutionAction.FLAG_FOR_FINANCE}),
    "charge_missing": frozenset({ResolutionAction.FLAG_FOR_FINANCE}),
}


class ResolutionNotAllowedError(Exception):
    """The action does not apply to this kind of discrepancy."""
