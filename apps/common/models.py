from __future__ import annotations

from django.db import models


class IdempotencyStatus(models.TextChoices):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class IdempotencyRecord(models.Model):
    """One `Idempotency-Key` a partner used on a creating POST, kept 24 h (docs/adr/0004-idempotency.md).

    `partner_id` is a plain integer so this shared primitive knows no domain model.
    """

    partner_id = models.BigIntegerField()
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64, help_text="SHA-256 of method, path and body")
    status = models.CharField(max_length=16, choices=IdempotencyStatus.choices)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    # Text, not jsonb: a replay must return the body byte for byte (jsonb reorders keys).
    response_body = models.TextField(blank=True)
    response_headers = models.JSONField(default=dict, blank=True)
    # The employers the claiming key was bound to (sorted ids), or null for a key that acts for all of its
    # partner's employers: a replay goes only to a key bound to at least these (issue 8, kind 9).
    requester_employer_ids = models.JSONField(null=True, blank=True)
    # `requester_employer_ids` as a short key (`idempotency.requester_scope_of`): each binding has its own keys,
    # so a key of another employer that reuses an Idempotency-Key gets a request — and retries — of its own.
    requester_scope = models.CharField(max_length=64, default="", blank=True)
    locked_until = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["partner_id", "key", "requester_scope"], name="idempotency_key_per_partner_scope"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.partner_id}:{self.key}"
