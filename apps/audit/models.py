"""Append-only audit streams (SPEC §4).

Rows of the four streams and their seals are only ever INSERTed; on PostgreSQL a trigger refuses UPDATE and
DELETE (migration 0002). Integrity is checked by per-stream hash chains kept in `AuditSeal` and extended by
the sealer (apps/audit/sealing.py, docs/adr/0003-audit-hash-chain.md). Models carry fields and indexes only.
"""

from __future__ import annotations

import uuid

from django.db import models

from apps.audit.contracts import PiiAction  # re-exported: the PII access stream's action names


class AuditStream(models.TextChoices):
    AUDIT = "audit"
    PII = "pii"
    INSURER = "insurer"
    JOB = "job"


class ExchangeDirection(models.TextChoices):
    OUTBOUND = "outbound"
    INBOUND = "inbound"


class JobPhase(models.TextChoices):
    START = "start"
    END = "end"


class JobStatus(models.TextChoices):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class AuditEvent(models.Model):
    """A state change: who, what, on which object, the changed fields before/after (redacted)."""

    actor = models.CharField(max_length=160)  # "api_key:ab12cd34", "user:alice", "system:outbox.relay"
    actor_kind = models.CharField(max_length=16)  # api_key | user | system
    partner_id = models.BigIntegerField(null=True, blank=True)
    action = models.CharField(max_length=80)
    object_type = models.CharField(max_length=60)
    object_id = models.CharField(max_length=80)
    employer_id = models.BigIntegerField(null=True, blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    request_id = models.CharField(max_length=80, blank=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ("-id",)
        indexes = [
            models.Index(fields=["object_type", "object_id"]),
            models.Index(fields=["employer_id", "created_at"]),
            models.Index(fields=["action"]),
            models.Index(fields=["request_id"], name="audit_event_request_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type}:{self.object_id}"


class PiiAccessEvent(models.Model):
    """Every decrypt/mask/reveal of a protected value: who, which subject and field, and why."""

    actor = models.CharField(max_length=160)
    actor_kind = models.CharField(max_length=16)
    subject_type = models.CharField(max_length=60)
    subject_id = models.CharField(max_length=80)
    field = models.CharField(max_length=60)
    action = models.CharField(max_length=16, choices=PiiAction.choices)
    purpose = models.CharField(max_length=200)
    request_id = models.CharField(max_length=80, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ("-id",)
        indexes = [
            models.Index(fields=["subject_type", "subject_id"]),
            models.Index(fields=["request_id"], name="audit_pii_request_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.subject_type}:{self.subject_id}.{self.field}"


class InsurerExchangeEvent(models.Model):
    """One request/response with an insurer; bodies are stored redacted and size-capped."""

    insurer_code = models.CharField(max_length=40)
    operation = models.CharField(max_length=60)
    direction = models.CharField(max_length=8, choices=ExchangeDirection.choices)
    endpoint = models.CharField(max_length=500, blank=True)
    request_body = models.TextField(blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.TextField(blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    endorsement_id = models.BigIntegerField(null=True, blank=True)
    correlation_id = models.CharField(max_length=80, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ("-id",)
        indexes = [
            models.Index(fields=["insurer_code", "created_at"]),
            models.Index(fields=["endorsement_id"]),
            models.Index(fields=["correlation_id"], name="audit_exchange_corr_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.direction} {self.insurer_code} {self.operation}"


class JobRunEvent(models.Model):
    """The start or the end of one run of a job; a run is the pair sharing `run_id`."""

    run_id = models.UUIDField(default=uuid.uuid4)
    job = models.CharField(max_length=80)
    phase = models.CharField(max_length=8, choices=JobPhase.choices)
    status = models.CharField(max_length=16, choices=JobStatus.choices)
    params = models.JSONField(null=True, blank=True)
    counts = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(db_index=True)  # the "at" of the start or end

    class Meta:
        ordering = ("-id",)
        indexes = [models.Index(fields=["job", "created_at"]), models.Index(fields=["run_id"])]

    def __str__(self) -> str:
        return f"{self.job} {self.phase} {self.status}"


class AuditSeal(models.Model):
    """One link of a stream's hash chain. `hash` covers the previous link and the canonical event
    (apps/audit/sealing.py:link_hash). Append-only like the events it seals."""

    stream = models.CharField(max_length=8, choices=AuditStream.choices)
    seq = models.BigIntegerField()
    event_id = models.BigIntegerField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)
    # Which canonical form `hash` was computed with; a new form gets a new number, old seals keep theirs.
    version = models.PositiveSmallIntegerField(default=1)
    sealed_at = models.DateTimeField()

    class Meta:
        ordering = ("stream", "seq")
        constraints = [
            models.UniqueConstraint(fields=["stream", "seq"], name="audit_seal_seq_unique"),
            models.UniqueConstraint(fields=["stream", "event_id"], name="audit_seal_event_once"),
        ]

    def __str__(self) -> str:
        return f"{self.stream}#{self.seq}"


class AuditChainHead(models.Model):
    """The sealer's position per stream. Locked (SELECT … FOR UPDATE) only by sealers, never by writers; it
    is bookkeeping, not audit data, so it may be updated."""

    stream = models.CharField(max_length=8, choices=AuditStream.choices, unique=True)
    seq = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default="0" * 64)
    # Every event with id <= floor_event_id is known to be sealed; the sealer only scans above it.
    floor_event_id = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.stream} head #{self.seq}"


STREAM_MODELS: dict[str, type[models.Model]] = {
    AuditStream.AUDIT: AuditEvent,
    AuditStream.PII: PiiAccessEvent,
    AuditStream.INSURER: InsurerExchangeEvent,
    AuditStream.JOB: JobRunEvent,
}
