"""Names apps.oauth writes and the constants of its token profile (ADR 0049)."""

from __future__ import annotations

from django.db.models import TextChoices

from apps.partners.contracts import BEARER_PRINCIPAL_PREFIX

# RFC 9068 §2.1: the `typ` header of a JWT access token.
ACCESS_TOKEN_TYPE = "at+jwt"
SIGNING_ALGORITHM = "ES256"
# Principal.key_prefix of an OAuth client: the rate-limit bucket, the audit label and `created_by` of what the
# client creates. One per client however many tokens it mints; it cannot collide with an API-key prefix
# (8 characters without a colon).
PRINCIPAL_PREFIX = BEARER_PRINCIPAL_PREFIX


class OAuthAuditAction(TextChoices):
    """`AuditEvent.action` values written by apps.oauth."""

    CLIENT_CREATED = "oauth_client.created"
    CLIENT_REVOKED = "oauth_client.revoked"
    SIGNING_KEY_ROTATED = "oauth_signing_key.rotated"


class TokenError(TextChoices):
    """RFC 6749 §5.2 error codes the token endpoint answers with."""

    INVALID_REQUEST = "invalid_request"
    INVALID_CLIENT = "invalid_client"
    INVALID_SCOPE = "invalid_scope"
    UNSUPPORTED_GRANT_TYPE = "unsupported_grant_type"
