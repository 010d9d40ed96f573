"""Insurers and what Keel exchanged with them.

`Insurer` (SPEC §5) is every insurance company Keel sends endorsements to. `InsurerSubmission` is this app's
own log of every endorsement it sent (one row per idempotency key), so the callback endpoint can tell a known
endorsement from an unknown one without importing the endorsements app. The sandbox insurer's models live in
`apps/insurers/sandbox/models.py` and are imported here so that Django registers them under this app's label.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from apps.insurers.contracts import InsurerProtocol, RejectionClass
from apps.insurers.sandbox.models import (
    SandboxApplied,
    SandboxCharge,
    SandboxConfig,
    SandboxRosterControl,
    SandboxRosterMember,
)

__all__ = [
    "CallbackEvent",
    "ConflictStatus",
    "Insurer",
    "InsurerConflict",
    "InsurerProtocol",
    "InsurerSubmission",
    "ResultFile",
    "ResultFileStatus",
    "SandboxApplied",
    "SandboxCharge",
    "SandboxConfig",
    "SandboxRosterControl",
    "SandboxRosterMember",
    "SubmissionState",
]


class Insurer(models.Model):
    """An insurance company Keel sends endorsements to. Managed by operators only."""

    code = models.SlugField(max_length=40, unique=True)
    name = models.CharField(max_length=120)
    protocol = models.CharField(max_length=8, choices=InsurerProtocol.choices, default=InsurerProtocol.REST)
    endpoint = models.CharField(max_length=500, blank=True, help_text="Base URL (rest/soap) or WSDL.")
    outbound_folder = models.CharField(max_length=500, blank=True)
    inbound_folder = models.CharField(max_length=500, blank=True)
    # Encrypted at rest by the insurers app once it exists (§8); never returned by the API.
    credentials = models.TextField(blank=True)
    # The insurer's `whsec_…` Standard Webhooks secret, sealed (apps/insurers/callback_secrets.py, ADR 0044).
    callback_secret = models.CharField(max_length=200, blank=True, help_text="whsec_… shared secret, sealed at rest")
    rate_limit_per_minute = models.PositiveIntegerField(default=600)
    batch_size = models.PositiveIntegerField(default=100)
    batch_window_seconds = models.PositiveIntegerField(default=5)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        # Moved here from the employers app (SPEC §5) by a state-only migration: the table keeps its name.
        db_table = "employers_insurer"
        ordering = ("code",)
        constraints = [
            models.CheckConstraint(condition=Q(batch_size__gte=1), name="insurer_batch_size_positive"),
        ]

    def __str__(self) -> str:
        return self.code


class SubmissionState(models.TextChoices):
    SENT = "sent"  # request on the wire, no answer yet
    PENDING = "pending"  # the insurer accepted it; the result comes by callback
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    TRANSIENT_ERROR = "transient_error"  # the last attempt failed; the caller retries


class InsurerSubmission(models.Model):
    insurer = models.ForeignKey(Insurer, on_delete=models.PROTECT, related_name="submissions")
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

    insurer = models.ForeignKey(Insurer, on_delete=models.PROTECT, related_name="callback_events")
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

    insurer = models.ForeignKey(Insurer, on_delete=models.PROTECT, null=True, blank=True, related_name="conflicts")
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


class ResultFileStatus(models.TextChoices):
    IMPORTED = "imported"
    QUARANTINED = "quarantined"


class ResultFile(models.Model):
    """One result file an insurer left in its inbound location, imported or quarantined exactly once.

    The unique (insurer, name, sha256) is the claim: two importers racing on the same file both try to insert
    this row in the transaction that applies its rows; the second waits for the first, hits the constraint and
    skips the file. A file that comes back unchanged (same name, same content) is therefore never applied again;
    a corrected file under the same name has another checksum and is imported on its own."""

    insurer = models.ForeignKey(Insurer, on_delete=models.PROTECT, related_name="result_files")
    name = models.CharField(max_length=255)
    sha256 = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=ResultFileStatus.choices)
    batch_id = models.CharField(max_length=100, blank=True)
    row_count = models.PositiveIntegerField(default=0)
    applied_count = models.PositiveIntegerField(default=0, help_text="Rows that advanced an endorsement.")
    unknown_count = models.PositiveIntegerField(default=0, help_text="Rows naming no endorsement sent to this insurer.")
    error = models.CharField(max_length=1000, blank=True)
    manifest = models.JSONField(null=True, blank=True)
    imported_at = models.DateTimeField()

    class Meta:
        ordering = ("-id",)
        constraints = [
            models.UniqueConstraint(fields=["insurer", "name", "sha256"], name="result_file_once"),
        ]
        indexes = [models.Index(fields=["status", "imported_at"])]

    def __str__(self) -> str:
        return f"{self.insurer_id}:{self.name} ({self.status})"
