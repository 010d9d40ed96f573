"""Webhook endpoints, partner events and their deliveries (SPEC §10, docs/adr/0030-partner-events-and-webhooks.md).

Imported by `apps/partners/models.py` so Django registers them under the `partners` app.
"""

from __future__ import annotations

import secrets

from django.db import models
from django.db.models import Q
from django.utils import timezone


def new_event_id() -> str:
    return f"evt_{secrets.token_hex(16)}"


def new_webhook_secret() -> str:
    """`whsec_` + base64 of 32 random bytes: the Standard Webhooks secret format."""
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class Event(models.Model):
    """One partner-visible fact, written in the transaction that made it.

    `id` is the insert order (internal); `public_id` is what partners see and the `webhook-id` of every delivery.
    `position` is the **commit order**: null when written, assigned after commit by the sequencer
    (`events.events_sequence`), under one lock, so positions become visible in increasing order and a
    reader resuming after position N never misses a later-committed event. `sequence` numbers the events
    of one object (1, 2, …) in the order they happened.
    """

    id = models.BigAutoField(primary_key=True)
    public_id = models.CharField(max_length=40, unique=True, default=new_event_id, editable=False)
    partner = models.ForeignKey("partners.Partner", on_delete=models.CASCADE, related_name="+")
    employer_id = models.BigIntegerField(null=True, blank=True)
    type = models.CharField(max_length=64)
    object_type = models.CharField(max_length=32)
    object_id = models.CharField(max_length=64)
    sequence = models.PositiveIntegerField()
    data = models.JSONField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)
    position = models.BigIntegerField(null=True, blank=True, unique=True)
    positioned_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("id",)
        indexes = [
            models.Index(fields=["id"], condition=Q(position__isnull=True), name="partners_event_unpositioned"),
            models.Index(fields=["partner", "position"], name="partners_event_partner_pos"),
            models.Index(fields=["created_at"], name="partners_event_created"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["object_type", "object_id", "sequence"], name="partners_event_seq_once"),
        ]

    def __str__(self) -> str:
        return f"{self.public_id} {self.type}"


class EventSequence(models.Model):
    """The last `sequence` handed out per object: one upsert per object per recording transaction, which
    also serialises concurrent recorders of the same object (row lock). `updated_at` is the time of the
    object's latest event: retention deletes a row once the object has been silent for
    `WEBHOOKS["SEQUENCE_RETENTION_DAYS"]` and none of its events is left (ADR 0046)."""

    object_type = models.CharField(max_length=32)
    object_id = models.CharField(max_length=64)
    last = models.PositiveIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["object_type", "object_id"], name="partners_eventseq_object")]
        indexes = [models.Index(fields=["updated_at"], name="partners_eventseq_updated")]

    def __str__(self) -> str:
        return f"{self.object_type}:{self.object_id} #{self.last}"


class WebhookEndpoint(models.Model):
    """A partner's receiver. `employer_ids` null = every employer of the partner (registered by a platform
    key); else the employers of the employer-bound key that registered it."""

    partner = models.ForeignKey("partners.Partner", on_delete=models.CASCADE, related_name="webhook_endpoints")
    url = models.CharField(max_length=2000)
    description = models.CharField(max_length=500, blank=True)
    event_types = models.JSONField(default=list)
    employer_ids = models.JSONField(null=True, blank=True)
    created_by = models.CharField(max_length=40, blank=True, help_text="API key prefix")
    is_active = models.BooleanField(default=True)
    disabled_at = models.DateTimeField(null=True, blank=True)
    disabled_reason = models.CharField(max_length=300, blank=True)
    # Endpoint-level backoff: consecutive failed attempts and when the endpoint may be tried again.
    consecutive_failures = models.PositiveIntegerField(default=0)
    retry_at = models.DateTimeField(default=timezone.now)
    failing_since = models.DateTimeField(null=True, blank=True)
    last_success_at = models.DateTimeField(null=True, blank=True)
    # One sender at a time per endpoint (per-endpoint concurrency 1: order, and no pile-up on a slow one).
    leased_until = models.DateTimeField(null=True, blank=True)
    lease_token = models.UUIDField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("id",)
        indexes = [models.Index(fields=["partner", "is_active"], name="partners_endpoint_active")]

    def __str__(self) -> str:
        return f"endpoint {self.pk} ({self.partner_id})"


class WebhookSecret(models.Model):
    """A signing secret. Every secret not yet expired signs each delivery (rotation: the old one expires in
    24 h, ADR 0030). `secret` is the sealed `whsec_…` (apps/partners/webhooks/secrets.py, ADR 0042): HMAC needs
    the plaintext, so it is encrypted at rest, not hashed."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="secrets")
    secret = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-id",)

    def __str__(self) -> str:
        return f"secret {self.pk} of endpoint {self.endpoint_id}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"  # waiting for its first or next attempt
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # gave up: the retry window passed, 410, or the endpoint was disabled meanwhile


class WebhookDelivery(models.Model):
    """One event to one endpoint. `order_key` (object type:id) orders deliveries of one object per endpoint."""

    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    order_key = models.CharField(max_length=100)
    status = models.CharField(max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ("id",)
        indexes = [
            models.Index(fields=["endpoint", "id"], condition=Q(status="pending"), name="partners_delivery_pending"),
            # Per-object order: is an earlier delivery of this object to this endpoint still backing off?
            models.Index(
                fields=["endpoint", "order_key", "id"],
                condition=Q(status="pending"),
                name="partners_delivery_key_pending",
            ),
            models.Index(fields=["created_at"], name="partners_delivery_created"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=[s.value for s in DeliveryStatus]), name="partners_delivery_status_valid"
            )
        ]

    def __str__(self) -> str:
        return f"delivery {self.pk} ({self.status})"


class WebhookAttempt(models.Model):
    """Every HTTP attempt, kept 30 days: what the partner and operators see."""

    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_rows")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="attempts")
    event_public_id = models.CharField(max_length=40)
    event_type = models.CharField(max_length=64)
    attempt = models.PositiveIntegerField()
    at = models.DateTimeField(default=timezone.now)
    status_code = models.PositiveIntegerField(null=True, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    response_excerpt = models.CharField(max_length=1000, blank=True)
    error = models.CharField(max_length=500, blank=True)
    succeeded = models.BooleanField(default=False)

    class Meta:
        ordering = ("-id",)
        indexes = [
            models.Index(fields=["endpoint", "-id"], name="partners_attempt_endpoint"),
            models.Index(fields=["at"], name="partners_attempt_at"),
        ]

    def __str__(self) -> str:
        return f"attempt {self.pk} of delivery {self.delivery_id}"
