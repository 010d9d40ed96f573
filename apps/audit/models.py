"""Append-only audit streams (SPEC §4). Rows are only ever INSERTed; on PostgreSQL a trigger refuses UPDATE
and DELETE. Integrity is checked by a hash chain kept in `AuditSeal` (see apps/audit/sealing.py)."""

from __future__ import annotations

import uuid

from django.db import models


class AuditStream(models.TextChoices):
    AUDIT = "audit"
    PII = "pii"
    INSURER = "insurer"
    JOB = "job"


class AuditEvent(models.Model):
    actor = models.CharField(max_length=160)  # "api_key:ab12cd34", "user:alice", "system:outbox.relay"
    actor_kind = models.CharField(max_length=16)
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
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type}:{self.object_id}"


class PiiAccessEvent(models.Model):
    actor = models.CharField(max_length=160)
    actor_kind = models.CharField(max_length=16)
    subject_type = models.CharField(max_length=60)
    subject_id = models.CharField(max_length=80)
    field = models.CharField(max_length=60)
    action = models.CharField(max_length=16)  # decrypt | mask | reveal
    purpose = models.CharField(max_length=200)
    request_id = models.CharField(max_length=80, blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ("-id",)
        indexes = [models.Index(fields=["subject_type", "subject_id"])]

    def __str__(self) -> str:
        return f"{self.action} {self.subject_type}:{self.subject_id}.{self.field}"


class InsurerExchangeEvent(models.Model):
    insurer_code = models.CharField(max_length=40)
    operation = models.CharField(max_length=60)
    direction = models.CharField(max_length=8)  # outbound | inbound
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
        indexes = [models.Index(fields=["insurer_code", "created_at"]), models.Index(fields=["endorsement_id"])]

    def __str__(self) -> str:
        return f"{self.direction} {self.insurer_code} {self.operation}"


class JobRunEvent(models.Model):
    run_id = models.UUIDField(default=uuid.uuid4)
    job = models.CharField(max_length=80)
    phase = models.CharField(max_length=8)  # start | end
    status = models.CharField(max_length=16)  # running | succeeded | failed | cancelled
    params = models.JSONField(null=True, blank=True)
    counts = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ("-id",)
        indexes = [models.Index(fields=["job", "created_at"]), models.Index(fields=["run_id"])]

    def __str__(self) -> str:
        return f"{self.job} {self.phase} {self.status}"


class AuditSeal(models.Model):
    """One link of a stream's hash chain: hash = sha256(prev_hash ‖ canonical event). Append-only too."""

    stream = models.CharField(max_length=8, choices=AuditStream.choices)
    seq = models.BigIntegerField()
    event_id = models.BigIntegerField()
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)
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
    """The sealer's position per stream; locked only by the sealer, never by writers."""

    stream = models.CharField(max_length=8, choices=AuditStream.choices, unique=True)
    seq = models.BigIntegerField(default=0)
    last_hash = models.CharField(max_length=64, default="0" * 64)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.stream} head #{self.seq}"


STREAM_MODELS: dict[str, type[models.Model]] = {
    AuditStream.AUDIT: AuditEvent,
    AuditStream.PII: PiiAccessEvent,
    AuditStream.INSURER: InsurerExchangeEvent,
    AuditStream.JOB: JobRunEvent,
}
APPEND_ONLY_TABLES = [m._meta.db_table for m in STREAM_MODELS.values()] + [AuditSeal._meta.db_table]
