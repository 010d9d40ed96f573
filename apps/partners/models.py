from __future__ import annotations

from django.db import models
from rest_framework_api_key.models import AbstractAPIKey

from apps.partners.contracts import Scope  # the names of API-key scopes; re-exported for this app's own code


class Partner(models.Model):
    """An HR platform, broker or lender that calls the API. Owns API keys, employers and loan applications."""

    name = models.CharField(max_length=120, unique=True)
    # Per-partner rate limits; null means the platform default (settings.API_DEFAULT_RATE_LIMITS).
    rate_limit_per_minute = models.PositiveIntegerField(null=True, blank=True)
    rate_limit_per_hour = models.PositiveIntegerField(null=True, blank=True)
    rate_limit_per_day = models.PositiveIntegerField(null=True, blank=True)
    is_active = models.BooleanField(default=True)
    # Where Keel writes when the partner's webhook deliveries keep failing (SPEC §10).
    contact_email = models.EmailField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class APIKey(AbstractAPIKey):
    """A partner's API key: shown once, stored as a SHA-512 hash, found by its 8-character prefix.

    `scopes` lists `Scope` values. A key acts for the employers in `employers`, or for every employer of
    its partner when `all_employers` is set (a platform key).
    """

    partner = models.ForeignKey(Partner, on_delete=models.PROTECT, related_name="api_keys")
    scopes = models.JSONField(default=list, blank=True)
    all_employers = models.BooleanField(default=False)
    employers = models.ManyToManyField("employers.Employer", blank=True, related_name="+")
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta(AbstractAPIKey.Meta):
        verbose_name = "API key"
        verbose_name_plural = "API keys"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


# Webhooks and events live in their own module (SPEC §10); imported here so Django registers them.
from apps.partners.webhooks.models import (  # noqa: E402
    Event,
    EventSequence,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
)

__all__ = [
    "APIKey",
    "Event",
    "EventSequence",
    "Partner",
    "Scope",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookSecret",
]
