"""Transactional outbox and inbox (SPEC §3, docs/adr/0002-transactional-outbox.md)."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone


class OutboxStatus(models.TextChoices):
    PENDING = "pending"  # waiting to be published (new, or retrying after a failure)
    INFLIGHT = "inflight"  # published under a lease; done when its consumer commits
    DONE = "done"  # consumed; deleted by retention
    DEAD = "dead"  # out of attempts; kept with its error until an operator requeues or purges it


UNFINISHED = (OutboxStatus.PENDING, OutboxStatus.INFLIGHT, OutboxStatus.DEAD)


class OutboxMessage(models.Model):
    id = models.BigAutoField(primary_key=True)
    topic = models.CharField(max_length=100)
    key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001 - NULL = no ordering key
    payload = models.JSONField()
    headers = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=10, choices=OutboxStatus.choices, default=OutboxStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    available_at = models.DateTimeField(default=timezone.now)
    leased_until = models.DateTimeField(null=True, blank=True)
    lease_token = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    published_at = models.DateTimeField(null=True, blank=True)
    done_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    last_traceback = models.TextField(blank=True)

    class Meta:
        ordering = ("id",)
        indexes = [
            # The relay's claim: pending rows in id order.
            models.Index(fields=["id"], condition=Q(status="pending"), name="outbox_pending_idx"),
            # Expired leases of crashed relays/consumers.
            models.Index(fields=["leased_until"], condition=Q(status="inflight"), name="outbox_lease_idx"),
            # Per-key ordering: is an earlier row of this key unfinished?
            models.Index(
                fields=["key", "id"],
                condition=Q(status__in=["pending", "inflight", "dead"]),
                name="outbox_key_open_idx",
            ),
            models.Index(fields=["done_at"], condition=Q(status="done"), name="outbox_done_idx"),
            models.Index(fields=["topic", "status"]),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(status__in=[s.value for s in OutboxStatus]), name="outbox_status_valid"),
            models.CheckConstraint(condition=Q(attempts__gte=0), name="outbox_attempts_non_negative"),
            # A claimed row always carries the lease that makes it claimable again if its relay dies.
            models.CheckConstraint(
                condition=~Q(status="inflight") | Q(leased_until__isnull=False, lease_token__isnull=False),
                name="outbox_inflight_has_lease",
            ),
            # Retention deletes by done_at: a done row without it would stay forever.
            models.CheckConstraint(
                condition=~Q(status="done") | Q(done_at__isnull=False), name="outbox_done_has_done_at"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.topic}#{self.pk} ({self.status})"


class InboxEntry(models.Model):
    """A message a consumer has applied, recorded in the same transaction as the consumer's own writes."""

    consumer = models.CharField(max_length=100)
    message_id = models.BigIntegerField()
    processed_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["consumer", "message_id"], name="inbox_once_per_consumer")]
        verbose_name_plural = "inbox entries"

    def __str__(self) -> str:
        return f"{self.consumer}:{self.message_id}"
