"""Partner events: their types, the read scope each needs, and what a producer hands to `partner_events_record`.

Producers in other apps import `EventDraft`, `EventType` and `apps.partners.webhooks.events.partner_events_record`
only (SPEC §10, docs/adr/0030-partner-events-and-webhooks.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db import models

# Endorsement statuses (SPEC §7) each publish `endorsement.<status lower>`. Listed here rather than imported:
# partners sits below endorsements in the layers, and a shipped event name never changes meaning.
ENDORSEMENT_STATUSES = (
    "received",
    "validated",
    "on_hold_funds",
    "on_hold_review",
    "funds_locked",
    "sent",
    "confirmed",
    "active",
    "rejected",
    "failed",
    "cancelled",
)


class EventType(models.TextChoices):
    ENDORSEMENT_RECEIVED = "endorsement.received"
    ENDORSEMENT_VALIDATED = "endorsement.validated"
    ENDORSEMENT_ON_HOLD_FUNDS = "endorsement.on_hold_funds"
    ENDORSEMENT_ON_HOLD_REVIEW = "endorsement.on_hold_review"
    ENDORSEMENT_FUNDS_LOCKED = "endorsement.funds_locked"
    ENDORSEMENT_SENT = "endorsement.sent"
    ENDORSEMENT_CONFIRMED = "endorsement.confirmed"
    ENDORSEMENT_ACTIVE = "endorsement.active"
    ENDORSEMENT_REJECTED = "endorsement.rejected"
    ENDORSEMENT_FAILED = "endorsement.failed"
    ENDORSEMENT_CANCELLED = "endorsement.cancelled"
    ENDORSEMENT_BATCH_COMPLETED = "endorsement_batch.completed"
    LEDGER_TOPUP_POSTED = "ledger.topup_posted"
    LEDGER_LOW_BALANCE = "ledger.low_balance"
    LOAN_APPLICATION_DECIDED = "loan_application.decided"
    # Produced by reconciliation (issue 12), one per employer of the run. `data`: {id, insurer, employer, status,
    # summary: the shape of `GET /api/v1/reconciliations/{id}`'s (matched, missing_at_insurer, missing_internally,
    # field_mismatch, amount_mismatch, charge_missing, changed_during_run, accepted — that employer's counts),
    # started_at, finished_at}.
    RECONCILIATION_COMPLETED = "reconciliation.completed"


# The object each type describes (and the read scope a key needs to see it).
OBJECT_TYPE_OF_PREFIX = {
    "endorsement": "endorsement",
    "endorsement_batch": "endorsement_batch",
    "ledger": "ledger_account",
    "loan_application": "loan_application",
    "reconciliation": "reconciliation",
}
READ_SCOPE_OF_PREFIX = {
    "endorsement": "endorsements:read",
    "endorsement_batch": "endorsements:read",
    "ledger": "ledger:read",
    "loan_application": "loans:read",
    "reconciliation": "reconciliation:read",
}


def read_scope_of(event_type: str) -> str:
    """The scope a key needs to read an event of `event_type` (SPEC §10)."""
    return READ_SCOPE_OF_PREFIX[event_type.split(".", 1)[0]]


def types_readable_with(scopes: frozenset[str]) -> list[str]:
    return [t for t in EventType.values if read_scope_of(t) in scopes]


class EventObjectType(models.TextChoices):
    """What an event is about (`object_type`): every producer names one of these (the constant, so `grep` finds
    them all), and `GET /api/v1/events` accepts only these in its `object_type` filter (else a 422 naming it)."""

    ENDORSEMENT = "endorsement"
    ENDORSEMENT_BATCH = "endorsement_batch"
    LEDGER_ACCOUNT = "ledger_account"
    LEDGER_TRANSACTION = "ledger_transaction"
    LOAN_APPLICATION = "loan_application"
    RECONCILIATION = "reconciliation"


@dataclass(frozen=True, slots=True)
class EventDraft:
    """One partner-visible fact, handed to `partner_events_record` inside the transaction that made it.

    `object_type`/`object_id` name the object the event is about; events of one object carry consecutive
    `sequence` numbers in the order they were recorded. `employer_id` is None only for events with no
    employer (loan applications); those are visible to the partner's keys with the read scope. `data` is
    JSON (money as decimal strings, never float; no PAN, names or e-mails).
    """

    type: str
    partner_id: int | None  # None: the partner of `employer_id` (looked up once per call)
    employer_id: int | None
    object_type: str
    object_id: str
    data: dict[str, Any] = field(default_factory=dict)


READ_SCOPE_OF_OBJECT_TYPE: dict[str, str] = {
    EventObjectType.ENDORSEMENT: "endorsements:read",
    EventObjectType.ENDORSEMENT_BATCH: "endorsements:read",
    EventObjectType.LEDGER_ACCOUNT: "ledger:read",
    EventObjectType.LEDGER_TRANSACTION: "ledger:read",
    EventObjectType.LOAN_APPLICATION: "loans:read",
    EventObjectType.RECONCILIATION: "reconciliation:read",
}
"""The scope a key needs to read events about an object of each type (SPEC §10: the scope of its events)."""
