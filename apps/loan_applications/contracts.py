"""The names the loan prequalification flow writes, in one list each (issue 9): its outbox topics and its audit
actions. Producers and consumers import these members; the values are the stored strings (byte-identical to
what earlier releases wrote), so `grep` of a member finds every writer and reader."""

from __future__ import annotations

from django.db.models import TextChoices


class LoanTopic(TextChoices):
    """Outbox topics of one application's life (key `loan:<application id>`, applied in order)."""

    SUBMITTED = "loan_application.submitted"
    SCORED = "loan_application.scored"
    DECIDED = "loan_application.decided"


class LoanAuditAction(TextChoices):
    """`AuditEvent.action` values written by apps.loan_applications (object type `loan_application`)."""

    SUBMITTED = "loan_application.submitted"
    SCORED = "loan_application.scored"
    DECIDED = "loan_application.decided"
    DECIDED_MANUALLY = "loan_application.decided_manually"
    PAN_KEY_ROTATED = "loan_application.pan_key_rotated"
