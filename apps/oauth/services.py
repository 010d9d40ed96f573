"""Writes for OAuth clients and signing keys: each one transaction with its audit row (ADR 0049)."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable

from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.common.actors import Actor
from apps.common.errors import DomainValidationError
from apps.oauth.contracts import OAuthAuditAction
from apps.oauth.keys import signing_key_new
from apps.oauth.models import OAuthClient, SigningKey
from apps.partners.principal_cache import principal_cache_clear
from apps.partners.services import grant_errors

CLIENT_ID_PREFIX = "kc_"
SECRET_PREFIX = "kcs_"


def secret_hash(secret: str) -> str:
    """SHA-256 hex of a client secret. The secret is 256 random bits, so a fast hash is enough (as for API
    keys); the comparison is constant-time (`hmac.compare_digest`) where it is checked."""
    return hashlib.sha256(secret.encode()).hexdigest()


@transaction.atomic
def oauth_client_create(
    *,
    partner_id: int,
    partner_name: str,
    name: str,
    scopes: Iterable[str],
    employer_ids: Iterable[int] = (),
    all_employers: bool = False,
    actor: Actor,
) -> tuple[OAuthClient, str]:
    """Create an OAuth client for a partner and return it with its secret — the only time the secret exists.

    The same rules as `api_key_create`: known scopes, at least one; either every employer of the partner
    (`all_employers`) or listed employers that belong to it. Raises `DomainValidationError` naming the field
    (`scopes`, `employers`), with nothing written."""
    scopes = sorted(set(scopes))
    employer_ids = sorted(set(employer_ids))
    errors = grant_errors(
        partner_id=partner_id,
        partner_name=partner_name,
        scopes=scopes,
        employer_ids=employer_ids,
        all_employers=all_employers,
    )
    if errors:
        raise DomainValidationError(errors)

    client_id = CLIENT_ID_PREFIX + secrets.token_urlsafe(15)
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    client = OAuthClient.objects.create(
        client_id=client_id,
        secret_hash=secret_hash(secret),
        partner_id=partner_id,
        name=name[:100] or f"{partner_name} client",
        scopes=scopes,
        all_employers=all_employers,
    )
    if employer_ids:
        client.employers.set(employer_ids)
    if not SigningKey.objects.filter(retired_at__isnull=True).exists():
        # The first client of a fresh install makes the first signing key, so `/.well-known/jwks.json` already
        # lists the key its tokens will carry (a resource server caching the JWKS at start-up would otherwise
        # refuse every token until its cache expired — newcomer trial).
        oauth_key_rotate(actor=Actor.system("oauth first signing key"))
    audit_record(
        actor=actor,
        action=OAuthAuditAction.CLIENT_CREATED,
        object_type="oauth_client",
        object_id=client_id,
        after={"partner": partner_name, "scopes": scopes, "employers": employer_ids, "all_employers": all_employers},
    )
    return client, secret


@transaction.atomic
def oauth_client_revoke(*, client_id: str, actor: Actor) -> OAuthClient:
    """Revoke a client: every token it holds gets 401 at once in this process and within 5 s in every other
    (the Bearer authentication keeps a client at most 5 s in `principal_cache`, ADR 0054). Idempotent.
    Raises `OAuthClient.DoesNotExist` for an unknown client id."""
    client = OAuthClient.objects.select_for_update().get(client_id=client_id)
    if client.revoked_at is None:
        client.revoked_at = timezone.now()
        OAuthClient.objects.filter(pk=client.pk, revoked_at__isnull=True).update(revoked_at=client.revoked_at)
        principal_cache_clear()  # this process at once; every other within 5 s (ADR 0054)
        audit_record(
            actor=actor,
            action=OAuthAuditAction.CLIENT_REVOKED,
            object_type="oauth_client",
            object_id=client_id,
            before={"revoked": False},
            after={"revoked": True},
        )
    return client


@transaction.atomic
def oauth_key_rotate(*, actor: Actor) -> SigningKey:
    """Retire the signing key(s) in use and create a new one, which signs every token from now on.

    A retired key stays in the JWKS and keeps verifying the tokens it signed until they expire (their `exp` is
    at most `OAUTH_ACCESS_TOKEN_TTL_SECONDS` after the rotation). Steps: 1. lock the unretired keys;
    2. retire them; 3. insert the new key; 4. audit — all in one transaction, so a signer never sees zero or
    two current keys."""
    now = timezone.now()
    current = list(SigningKey.objects.select_for_update().filter(retired_at__isnull=True).order_by("id"))
    SigningKey.objects.filter(pk__in=[k.pk for k in current]).update(retired_at=now)
    key = signing_key_new()
    key.created_at = now
    key.save()
    audit_record(
        actor=actor,
        action=OAuthAuditAction.SIGNING_KEY_ROTATED,
        object_type="oauth_signing_key",
        object_id=key.kid,
        before={"kids": [k.kid for k in current]},
        after={"kid": key.kid},
    )
    return key
