"""Names other code uses to talk about reconciliation: audit actions, job names, errors (issue 12)."""

from __future__ import annotations

from collections.abc import Mapping

JOB_RECONCILIATION = "reconciliation.run"
AUDIT_RUN_STARTED = "reconciliation.run_started"
AUDIT_RUN_CANCEL_REQUESTED = "reconciliation.run_cancel_requested"
AUDIT_RUN_RESUMED = "reconciliation.run_resumed"
AUDIT_RUN_CANCELLED = "reconciliation.run_cancelled"
AUDIT_DISCREPANCY_RESOLVED = "reconciliation.discrepancy_resolved"

# A live worker refreshes its run's lock with every recorded page and, between pages, at least every
# `HEARTBEAT_SECONDS` (while it waits out a `Retry-After` or a file insurer, and while it matches, ADR 0061). The
# longest step with no refresh is one insurer request (connect 5 s + read 30 s timeouts), so a lock goes
# without a refresh for at most ~50 s; it lives `LOCK_TTL_SECONDS` after its last refresh (over 2x that). When
# it lapses the worker is taken for dead: the abandoned-run sweep (beat, every minute) resumes the run.
HEARTBEAT_SECONDS = 15
LOCK_TTL_SECONDS = 120
# A run whose worker stopped is queued again at most this many times; the next stop ends it FAILED (a run that
# kills its worker every time, say by exhausting its memory, must not loop forever).
MAX_RESUMES = 3
# A cancel ends the run itself, at once, when the run's lock was last refreshed longer ago than this (ADR 0063):
# four heartbeats, over the ~50 s a live worker can go without a refresh (one insurer request plus 15 s), so a live
# worker is never taken for dead; it still stops within a second of the cancel (`WAIT_SLICE_SECONDS`).
DEAD_WORKER_SECONDS = 4 * HEARTBEAT_SECONDS
# Longest single sleep while a run waits (a `Retry-After`, a file insurer's answer): a cancel is seen within it.
WAIT_SLICE_SECONDS = 1.0

# The figures of a run's summary, in this order, every key always present: matched members, discrepancies by
# kind, `changed_during_run` (members and endorsements that differed but whose Keel side was written after the
# insurer's data was read: not judged, not written, ADR 0063) and `accepted` (differences an operator settled
# before, not written again, ADR 0045). The API's run `summary` and each employer's `reconciliation.completed`
# event carry exactly this shape (`run_summary`).
SUMMARY_KEYS = (
    "matched",
    "missing_at_insurer",
    "missing_internally",
    "field_mismatch",
    "amount_mismatch",
    "charge_missing",
    "changed_during_run",
    "accepted",
)


def run_summary(counts: Mapping[str, int]) -> dict[str, int]:
    """The summary of a run (or of one employer's share of it) from its counts: `{key: int}` for every key of
    `SUMMARY_KEYS`, in that order, 0 when absent; other counts (pages, rows pulled) are left out: they are the
    run's `progress`. The one builder of both the API's `summary` and the partner event's."""
    return {key: int(counts.get(key, 0)) for key in SUMMARY_KEYS}


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
