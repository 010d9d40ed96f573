"""JWT access tokens (RFC 9068 profile), minted for an OAuth client and verified on every Bearer request.

Claims: `iss` (OAUTH_ISSUER), `sub` and `client_id` (the client id: a client-credentials token acts for the
client itself, RFC 9068 §2.2), `aud` (OAUTH_AUDIENCE), `iat`, `exp` (iat + OAUTH_ACCESS_TOKEN_TTL_SECONDS),
`jti` (random), `scope` (space-separated). Header: `alg` ES256, `typ` at+jwt, `kid` of the signing key.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

import jwt
from django.conf import settings

from apps.common.actors import Actor
from apps.oauth.contracts import ACCESS_TOKEN_TYPE, SIGNING_ALGORITHM
from apps.oauth.keys import public_key_for, signer_of
from apps.oauth.models import OAuthClient, SigningKey

REQUIRED_CLAIMS = ["iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope"]
MAX_TOKEN_LENGTH = 4096


class InvalidToken(Exception):
    """The presented token cannot be accepted; `str()` says why in words a partner can act on."""


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    expires_in: int  # seconds
    scope: str  # space-separated


def _current_signing_key() -> SigningKey:
    key = SigningKey.objects.filter(retired_at__isnull=True).first()
    if key is None:
        # The first token of a fresh install creates the first key (audited like a rotation). Imported here:
        # this module is on DRF's authentication import path, which must not reach apps.common.errors.
        from apps.oauth.services import oauth_key_rotate

        key = oauth_key_rotate(actor=Actor.system("oauth first signing key"))
    return key


def access_token_mint(*, client: OAuthClient, scopes: list[str], now: float | None = None) -> AccessToken:
    """Sign an access token for `client` carrying `scopes` (already checked to be the client's). `now` is a
    UNIX time in seconds (tests); the lifetime is OAUTH_ACCESS_TOKEN_TTL_SECONDS."""
    issued = int(time.time() if now is None else now)
    ttl = int(settings.OAUTH_ACCESS_TOKEN_TTL_SECONDS)
    scope = " ".join(sorted(scopes))
    claims = {
        "iss": settings.OAUTH_ISSUER,
        "sub": client.client_id,
        "aud": settings.OAUTH_AUDIENCE,
        "iat": issued,
        "exp": issued + ttl,
        "jti": secrets.token_urlsafe(16),
        "client_id": client.client_id,
        "scope": scope,
    }
    signer = signer_of(_current_signing_key())
    token = jwt.encode(
        claims, signer.private_key, algorithm=SIGNING_ALGORITHM, headers={"kid": signer.kid, "typ": ACCESS_TOKEN_TYPE}
    )
    return AccessToken(token=token, expires_in=ttl, scope=scope)


def access_token_verify(token: str) -> dict[str, Any]:
    """The claims of a token Keel signed for this API, still valid. Raises `InvalidToken` otherwise: malformed,
    unknown key, bad signature, wrong `typ`/`alg`/`iss`/`aud`, expired (beyond OAUTH_CLOCK_LEEWAY_SECONDS) or
    missing a required claim."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("The access token is not valid.")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise InvalidToken("The access token is not valid.") from None
    if header.get("alg") != SIGNING_ALGORITHM or header.get("typ") != ACCESS_TOKEN_TYPE:
        raise InvalidToken("The access token is not a Keel access token.")
    kid = header.get("kid")
    public_key = public_key_for(kid) if isinstance(kid, str) and len(kid) <= 64 else None
    if public_key is None:
        raise InvalidToken("The access token is signed with a key Keel does not publish.")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            public_key,
            algorithms=[SIGNING_ALGORITHM],
            audience=settings.OAUTH_AUDIENCE,
            issuer=settings.OAUTH_ISSUER,
            leeway=settings.OAUTH_CLOCK_LEEWAY_SECONDS,
            options={"require": REQUIRED_CLAIMS},
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("The access token has expired.") from None
    except jwt.InvalidAudienceError:
        raise InvalidToken("The access token is not meant for this API (aud).") from None
    except jwt.InvalidSignatureError:
        raise InvalidToken("The access token's signature does not verify.") from None
    except jwt.InvalidTokenError:
        raise InvalidToken("The access token is not valid.") from None
    if not isinstance(claims.get("client_id"), str) or not isinstance(claims.get("scope"), str):
        raise InvalidToken("The access token is not valid.")
    return claims
