"""Endorsement workflows (SPEC §7), one module per stage. Every transition is a conditional UPDATE on the
current status, recorded in the endorsement's history and the audit log, in one transaction with its ledger
operation and outbox events (`transitions.py`).

Pipeline (see docs/adr/0012-endorsement-pipeline.md):

1. `intake.endorsement_submit` / `batches.endorsement_batch_create` (API request): validate, price, store
   RECEIVED (`rows.py` defines the stored row once), enqueue `endorsements.process` (key = member for
   singles, batch chunk for batches).
2. `processing.endorsements_process` (consumer): per member in order — wait behind an earlier in-flight
   endorsement, re-validate against committed state, velocity breaker → ON_HOLD_REVIEW, VALIDATED, then
   debits take a hold (one lock round per employer, `funds.py`) → FUNDS_LOCKED or ON_HOLD_FUNDS. Ready
   endorsements get `ready_at`.
3. `scheduling.scheduler_tick` (beat, every second): per insurer, when its window has elapsed or a batch is
   full, moves ready endorsements to SENT — credits first — and enqueues one `endorsements.dispatch` per batch.
4. The dispatch consumer calls the insurer outside any transaction, then `results.results_apply`:
   CONFIRMED → ACTIVE (capture or refund + coverage) or REJECTED (hold released); a retry budget ends in
   FAILED (`operator.endorsements_fail`).
5. Reaching a terminal state wakes the member's next endorsement and may complete its batch
   (`transitions._on_terminal`).

Partner and operator actions (cancel, review, retry, parked debits) are in `operator.py`. Callers use the
names below (`services.X`); underscored helpers are shared between the stage modules (and `conflicts.py`)
only.
"""

from __future__ import annotations

from apps.endorsements.services.batches import RowError, endorsement_batch_cancel, endorsement_batch_create
from apps.endorsements.services.intake import endorsement_quote, endorsement_submit
from apps.endorsements.services.operator import (
    endorsement_cancel,
    endorsement_retry,
    endorsement_review_decide,
    endorsements_expire_parked,
    endorsements_fail,
    endorsements_note_send_retry,
    endorsements_wake_parked,
)
from apps.endorsements.services.processing import endorsements_process
from apps.endorsements.services.results import InsurerOutcome, endorsements_activate_due, results_apply
from apps.endorsements.services.scheduling import scheduler_tick
from apps.endorsements.services.transitions import Transition

__all__ = [
    "InsurerOutcome",
    "RowError",
    "Transition",
    "endorsement_batch_cancel",
    "endorsement_batch_create",
    "endorsement_cancel",
    "endorsement_quote",
    "endorsement_retry",
    "endorsement_review_decide",
    "endorsement_submit",
    "endorsements_activate_due",
    "endorsements_expire_parked",
    "endorsements_fail",
    "endorsements_note_send_retry",
    "endorsements_process",
    "endorsements_wake_parked",
    "results_apply",
    "scheduler_tick",
]
