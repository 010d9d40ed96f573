"""Names the endorsements app writes into shared, stored lists: its outbox topics, its audit actions, and the
endorsement types and statuses other apps read (ops counts them; ADR 0039: apps never import each other's models).

One member per name, so `grep` finds every place a name is written and a consumer imports the constant
instead of retyping the string. The values are stored (outbox rows, audit rows) and matched by consumers:
once shipped, a value never changes.
"""

from __future__ import annotations

from django.db.models import TextChoices


class EndorsementTopic(TextChoices):
    """Outbox topics this app writes (and consumes itself; ADR 0012)."""

    PROCESS = "endorsements.process"  # RECEIVED endorsements to validate and fund; key: member or batch
    DISPATCH = "endorsements.dispatch"  # one batch to send to its insurer; no key (issue 10)


class EndorsementAuditAction(TextChoices):
    """Audit actions this app writes: one per endorsement status reached, and the batch upload."""

    RECEIVED = "endorsement.received"
    VALIDATED = "endorsement.validated"
    ON_HOLD_FUNDS = "endorsement.on_hold_funds"
    ON_HOLD_REVIEW = "endorsement.on_hold_review"
    FUNDS_LOCKED = "endorsement.funds_locked"
    SENT = "endorsement.sent"
    CONFIRMED = "endorsement.confirmed"
    ACTIVE = "endorsement.active"
    REJECTED = "endorsement.rejected"
    FAILED = "endorsement.failed"
    CANCELLED = "endorsement.cancelled"
    BATCH_CREATED = "endorsement_batch.created"


class EndorsementType(TextChoices):
    """`Endorsement.type`: what a row asks of the insurer (SPEC §7)."""

    ADDITION = "addition"
    DELETION = "deletion"
    CORRECTION = "correction"


class EndorsementStatus(TextChoices):
    """`Endorsement.status`, the lifecycle of SPEC §7 (ADR 0012); stored, so a value never changes."""

    RECEIVED = "RECEIVED"
    VALIDATED = "VALIDATED"
    ON_HOLD_FUNDS = "ON_HOLD_FUNDS"
    ON_HOLD_REVIEW = "ON_HOLD_REVIEW"
    FUNDS_LOCKED = "FUNDS_LOCKED"
    SENT = "SENT"
    CONFIRMED = "CONFIRMED"
    ACTIVE = "ACTIVE"
    REJECTED = "REJECTED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
