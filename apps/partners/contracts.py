"""What other apps may know about an authenticated partner request."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import TextChoices


class Scope(TextChoices):
    """API-key scopes (`APIKey.scopes` holds their values); every app's views name theirs from here."""

    EMPLOYERS_READ = "employers:read"
    EMPLOYERS_WRITE = "employers:write"
    ENDORSEMENTS_READ = "endorsements:read"
    ENDORSEMENTS_WRITE = "endorsements:write"
    LEDGER_READ = "ledger:read"
    LEDGER_WRITE = "ledger:write"
    LOANS_READ = "loans:read"
    LOANS_WRITE = "loans:write"
    RECONCILIATION_READ = "reconciliation:read"
    RECONCILIATION_WRITE = "reconciliation:write"
    WEBHOOKS_READ = "webhooks:read"
    WEBHOOKS_WRITE = "webhooks:write"
    ANALYTICS_READ = "analytics:read"


class PartnerTopic(TextChoices):
    """Outbox topics apps.partners writes (and consumes itself)."""

    ENDPOINT_DISABLED = "partners.endpoint_disabled"


class PartnerAuditAction(TextChoices):
    """`AuditEvent.action` values written by apps.partners, its webhooks included."""

    PARTNER_CREATED = "partner.created"
    API_KEY_CREATED = "api_key.created"
    API_KEY_REVOKED = "api_key.revoked"
    API_KEY_RATE_LIMITS_RESET = "api_key.rate_limits_reset"
    WEBHOOK_ENDPOINT_CREATED = "webhook_endpoint.created"
    WEBHOOK_ENDPOINT_UPDATED = "webhook_endpoint.updated"
    WEBHOOK_ENDPOINT_DELETED = "webhook_endpoint.deleted"
    WEBHOOK_ENDPOINT_SECRET_ROTATED = "webhook_endpoint.secret_rotated"
    WEBHOOK_ENDPOINT_DISABLED = "webhook_endpoint.disabled"
    EVENT_REDELIVERED = "event.redelivered"
    WEBHOOK_SECRETS_RESEALED = "webhook_secrets.resealed"


# `Principal.key_prefix` of a caller authenticated by an OAuth access token (apps.oauth, ADR 0049) starts with this.
BEARER_PRINCIPAL_PREFIX = "oauth:"


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated API caller (set as `request.user` by `ApiKeyAuthentication`)."""

    partner_id: int
    partner_name: str
    key_prefix: str
    scopes: frozenset[str]
    all_employers: bool
    # Employer ids a non-platform key may act for (empty for platform keys: they act for all of the
    # partner's employers).
    employer_ids: frozenset[int]
    # {"minute": n, "hour": n, "day": n} for this key's partner.
    rate_limits: dict[str, int]
    # The last moment (Unix seconds) the credential authenticates, if it expires: an API key's expiry, a bearer
    # token's `exp` plus the clock leeway. An open live stream ends then (apps/live/streaming.py).
    valid_until: float | None = None

    # DRF and Django treat `request.user` as a user object; these make a Principal behave like one.
    is_authenticated = True
    is_anonymous = False
    is_staff = False
    is_active = True

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def credential_name(self) -> str:
        """What the caller presented, as a refusal names it: "access token" (OAuth bearer) or "API key"."""
        return "access token" if self.key_prefix.startswith(BEARER_PRINCIPAL_PREFIX) else "API key"

    def may_act_for(self, *, employer_id: int, employer_partner_id: int) -> bool:
        if employer_partner_id != self.partner_id:
            return False
        return self.all_employers or employer_id in self.employer_ids

    @property
    def pk(self) -> str:
        return self.key_prefix
