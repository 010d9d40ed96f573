"""Names the ledger writes that other code reads: its outbox topics and its audit actions. Consumers import
these members instead of retyping the strings; values never change meaning once shipped."""

from __future__ import annotations

from django.db.models import TextChoices


class LedgerTopic(TextChoices):
    """Outbox topics the ledger publishes."""

    # {employer_id, available}: a top-up, refund or release added to `available` (park and wake, §6/§7).
    FUNDS_AVAILABLE = "ledger.funds_available"
    # {employer_id, available, threshold}: `available` crossed below the threshold (once per crossing). The
    # e-mail consumer lives in handlers.py; the partner event `ledger.low_balance` (§10) carries this payload as it is.
    LOW_BALANCE = "ledger.low_balance"


class LedgerAuditAction(TextChoices):
    """`AuditEvent.action` of every ledger write (one audit row per operation or lock round)."""

    TOPUP_POSTED = "ledger.topup_posted"  # object: the ledger_transaction
    HOLDS_PLACED = "ledger.holds_placed"  # object: the ledger_account; after: count, amount, references
    HOLDS_CAPTURED = "ledger.holds_captured"  # as HOLDS_PLACED
    HOLDS_RELEASED = "ledger.holds_released"  # as HOLDS_PLACED
    REFUNDS_POSTED = "ledger.refunds_posted"  # as HOLDS_PLACED
