"""OAuth clients (RFC 6749 §4.4 client credentials) and the keys that sign their access tokens (ADR 0049)."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class OAuthClient(models.Model):
    """A partner's OAuth client: the second door beside API keys, with the same scopes and employer binding.

    `secret_hash` is the SHA-256 hex of the secret (the secret is 256 random bits, shown once); `scopes` lists
    `apps.partners.contracts.Scope` values. The client acts for the employers in `employers`, or for every
    employer of its partner when `all_employers` is set. A revoked client's tokens are refused on their next
    request (`apps.oauth.authentication`).
    """

    client_id = models.CharField(max_length=40, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    partner = models.ForeignKey("partners.Partner", on_delete=models.PROTECT, related_name="oauth_clients")
    name = models.CharField(max_length=100)
    scopes = models.JSONField(default=list)
    all_employers = models.BooleanField(default=False)
    employers = models.ManyToManyField("employers.Employer", blank=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ("-created_at",)
        verbose_name = "OAuth client"
        verbose_name_plural = "OAuth clients"

    def __str__(self) -> str:
        return f"{self.client_id} ({self.name})"

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None


class SigningKey(models.Model):
    """An ES256 key pair that signs access tokens. The newest key without `retired_at` signs; a retired key is
    still published in the JWKS and still verifies until every token it signed has expired
    (`retired_at` + the token lifetime). `private_key` is the PKCS#8 PEM sealed with `OAUTH_SIGNING_KEYS_KEY`
    (apps/common/secretbox.py, context `keel:oauth-signing-key:<kid>`)."""

    kid = models.CharField(max_length=64, unique=True)
    private_key = models.TextField()
    public_jwk = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    retired_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return self.kid
