"""What Keel sent to insurers and what insurers called back with.

`InsurerSubmission` is this app's own log of every endorsement it sent (one row per idempotency key), so the
callback endpoint can tell a known endorsement from an unknown one without importing the endorsements app.
The sandbox insurer's models live in `apps/insurers/sandbox/models.py` and are imported here so that Django
registers them under this app's label.
"""

from __future__ import annotations

from django.db import models

from apps.insurers.contracts import RejectionClass
from apps.insurers.sandbox.models import SandboxApplied, SandboxConfig

__all__ = [
    "CallbackEvent",
    "ConflictStatus",
    "InsurerConflict",
    "InsurerSubmission",
    "SandboxApplied",
    "SandboxConfig",
    "SubmissionState",
]


class SubmissionState(models.TextChoices):
    SENT = "sent"  # request on the wire, no answer yet
    PENDING = "pending"  # the insurer accepted it; the result comes by callback
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    TRANSIENT_ERROR = "transient_error"  # the last attempt failed; the caller retries


class InsurerSubmission(models.Model):
    insurer = models.ForeignKey("employers.Insurer", on_delete=models.PROTECT, related_name="submissions")
    endorsement_id = models.BigIntegerField()
    idempotency_key = models.CharField(max_length=255, unique=True)
    kind = models.CharField(max_length=16)
    attempts = models.PositiveIntegerField(default=0)
    first_sent_at = models.DateTimeField()
    sent_at = models.DateTimeField()
    last_outcome = models.CharField(max_length=16, choices=SubmissionState.choices, default=SubmissionState.SENT)
    insurer_reference = models.CharField(max_length=120, blank=True)
    rejection_class = models.CharField(max_length=24, choices=RejectionClass.choices, blank=True)
    rejection_reason = models.CharField(max_length=500, blank=True)
    last_error = models.CharField(max_length=500, blank=True)
    responded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-id",)
        indexes = [models.Index(fields=["insurer", "endorsement_id"])]

    def __str__(self) -> str:
        return f"{self.insurer_id}:{self.endorsement_id} ({self.last_outcome})"


class CallbackEvent(models.Model):
    """One item of a verified insurer callback that named a known submission. The unique constraint on
    (insurer, webhook_id, item_index) is what makes a redelivered callback a no-op."""

    insurer = models.ForeignKey("employers.Insurer", on_delete=models.PROTECT, related_name="callback_events")
    webhook_id = models.CharField(max_length=255)
    item_index = models.PositiveIntegerField()
    submission = models.ForeignKey(InsurerSubmission, on_delete=models.PROTECT, related_name="callbacks")
    event_type = models.CharField(max_length=40)
    outcome = models.CharField(max_length=16)
    insurer_reference = models.CharField(max_length=120, blank=True)
    rejection_class = models.CharField(max_length=24, blank=True)
    rejection_reason = models.CharField(max_length=500, blank=True)
    published = models.BooleanField(default=True, help_text="False when the result was already recorded.")
    received_at = models.DateTimeField()

    class Meta:
        ordering = ("-id",)
        constraints = [
            models.UniqueConstraint(fields=["insurer", "webhook_id", "item_index"], name="insurer_callback_item_once"),
        ]

    def __str__(self) -> str:
        return f"{self.webhook_id}#{self.item_index} {self.event_type}"


class ConflictStatus(models.TextChoices):
    OPEN = "open"  # an operator has to decide
    REVERSAL_REQUESTED = "reversal_requested"  # Keel's decision stands; the insurer was asked to reverse its result
    RESOLVED = "resolved"  # the insurer's result was accepted and applied


class InsurerConflict(models.Model):
    """An insurer result that contradicts a state Keel already decided (issue 8, kind 11; ADR 0020).

    A rejection for an endorsement Keel holds CONFIRMED/ACTIVE, or a confirmation for one Keel FAILED,
    CANCELLED or REJECTED (its hold released, yet the insurer now covers the member). The result is not
    applied and nothing is overwritten; operators resolve it through `apps.insurers.conflicts` (admin list).
    One unresolved row per (endorsement, insurer outcome): a redelivered contradiction finds it again.
    """

    insurer = models.ForeignKey(
        "employers.Insurer", on_delete=models.PROTECT, null=True, blank=True, related_name="conflicts"
    )
    endorsement_id = models.BigIntegerField()
    submission = models.ForeignKey(
        InsurerSubmission, on_delete=models.PROTECT, null=True, blank=True, related_name="conflicts"
    )
    source = models.CharField(max_length=16, help_text="callback (signed webhook) or gateway (synchronous answer)")
    insurer_outcome = models.CharField(max_length=16)  # confirmed | rejected
    insurer_reference = models.CharField(max_length=120, blank=True)
    rejection_class = models.CharField(max_length=24, blank=True)
    rejection_reason = models.CharField(max_length=500, blank=True)
    keel_status = models.CharField(max_length=16, help_text="The endorsement's state when the result arrived")
    occurrences = models.PositiveIntegerField(default=1)
    detected_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    status = models.CharField(max_length=20, choices=ConflictStatus.choices, default=ConflictStatus.OPEN)
    resolution_note = models.CharField(max_length=500, blank=True)
    resolved_by = models.CharField(max_length=120, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-id",)
        indexes = [models.Index(fields=["status", "detected_at"])]
        constraints = [
            models.UniqueConstraint(
                fields=["endorsement_id", "insurer_outcome"],
                condition=~models.Q(status="resolved"),
                name="insurer_conflict_one_open_per_result",
            ),
        ]

    def __str__(self) -> str:
        return f"endorsement {self.endorsement_id}: insurer {self.insurer_outcome}, Keel {self.keel_status}"
