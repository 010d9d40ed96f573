"""`Authorization: Bearer <access token>` authentication: the second door, giving exactly the principal an API
key with the same scopes and employer binding gives (ADR 0049).

The token's signature and claims are checked first (no database), then the client is read, or found in the
process's `principal_cache` (at most 5 s old, ADR 0054): a revoked client, or one whose partner is inactive, is
refused within 5 s, at once in the process that revoked it. The principal's scopes are those of
the token that the client still holds (an operator narrowing a client narrows its live tokens too), its
employers are the client's current ones, its rate-limit bucket is the client (`oauth:<client_id>`), and its
`partner_id` scopes idempotency keys to the partner like any key's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from django.conf import settings
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from apps.oauth.contracts import PRINCIPAL_PREFIX
from apps.oauth.models import OAuthClient
from apps.oauth.tokens import InvalidToken, access_token_verify
from apps.partners.authentication import partner_rate_limits, touch_last_used
from apps.partners.contracts import Principal
from apps.partners.principal_cache import principal_cache

KEYWORD = "Bearer"
REALM = "keel"


class InvalidTokenError(exceptions.AuthenticationFailed):
    """401 with the RFC 6750 §3 challenge `Bearer error="invalid_token"` (problem+json body)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        safe = detail.replace('"', "'")
        self.headers = {
            "WWW-Authenticate": f'{KEYWORD} realm="{REALM}", error="invalid_token", error_description="{safe}"'
        }


class BearerTokenAuthentication(BaseAuthentication):
    """Listed before `ApiKeyAuthentication` in DRF settings: it answers only `Bearer` headers and passes any
    other header on, so the API-key path is unchanged."""

    def authenticate(self, request: Request) -> tuple[Principal, OAuthClient] | None:
        header = get_authorization_header(request)
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != KEYWORD.lower().encode():
            return None
        try:
            raw = token.decode("ascii").strip()
        except UnicodeDecodeError:
            raise InvalidTokenError("The access token is not valid.") from None
        if not raw:
            raise InvalidTokenError(f"Use the header `Authorization: {KEYWORD} <access token>`.")
        try:
            claims = access_token_verify(raw)
        except InvalidToken as exc:
            raise InvalidTokenError(str(exc)) from None
        client, base = _client_and_principal(claims["client_id"])
        touch_last_used(client)  # the cached client's copy: at most once a minute (ADR 0054)
        scopes = frozenset(claims["scope"].split()) & base.scopes
        valid_until = float(claims["exp"]) + settings.OAUTH_CLOCK_LEEWAY_SECONDS
        return replace(base, scopes=scopes, valid_until=valid_until), client

    @staticmethod
    def principals_still_valid(key_prefixes: Iterable[str]) -> set[str]:
        """`oauth_clients_still_valid` for the OAuth clients among principals' `key_prefix`es (`oauth:<client
        id>`), answered as those prefixes."""
        ids = (p.removeprefix(PRINCIPAL_PREFIX) for p in key_prefixes if p.startswith(PRINCIPAL_PREFIX))
        return {PRINCIPAL_PREFIX + client_id for client_id in oauth_clients_still_valid(ids)}

    def authenticate_header(self, request: Request) -> str:
        # The challenge of a request that sent no credentials (or a scheme neither door knows): both doors.
        return f'Api-Key, {KEYWORD} realm="{REALM}"'


def _client_and_principal(client_id: str) -> tuple[OAuthClient, Principal]:
    """The client and its principal with the client's own scopes (a token narrows them per request). A client
    found usable is kept in `principal_cache` for at most 5 s (ADR 0054); a revoked or unknown one is re-read
    on every request."""
    cache_key = ("oauth", client_id)
    cached: tuple[OAuthClient, Principal] | None = principal_cache.get(cache_key)
    if cached is not None:
        return cached
    client = OAuthClient.objects.select_related("partner").filter(client_id=client_id).first()
    if client is None or client.revoked_at is not None:
        raise InvalidTokenError("The OAuth client of this token has been revoked.")
    if not client.partner.is_active:
        raise InvalidTokenError("The partner is not active.")
    found = (client, principal_for_client(client, token_scopes=list(client.scopes)))
    principal_cache.put(cache_key, found)
    return found


def oauth_clients_still_valid(client_ids: Iterable[str]) -> set[str]:
    """The client ids among `client_ids` whose tokens authenticate now as far as the client goes — not revoked,
    partner active — in one query that builds no model (the caller checks each token's own expiry:
    `Principal.valid_until`). `apps.partners.authentication.api_keys_still_valid` for keys; same caller, same
    reasons."""
    wanted = sorted(set(client_ids))
    if not wanted:
        return set()
    return set(
        OAuthClient.objects.filter(client_id__in=wanted, revoked_at__isnull=True, partner__is_active=True).values_list(
            "client_id", flat=True
        )
    )


def principal_for_client(client: OAuthClient, *, token_scopes: list[str]) -> Principal:
    """The `Principal` of a request made with one of `client`'s tokens (see the module docstring); the employer
    binding is read here (one query for a client bound to employers)."""
    employer_ids: frozenset[int] = frozenset()
    if not client.all_employers:
        employer_ids = frozenset(client.employers.values_list("id", flat=True))
    return Principal(
        partner_id=client.partner_id,
        partner_name=client.partner.name,
        key_prefix=PRINCIPAL_PREFIX + client.client_id,
        scopes=frozenset(token_scopes) & frozenset(client.scopes),
        all_employers=client.all_employers,
        employer_ids=employer_ids,
        rate_limits=partner_rate_limits(client.partner),
    )
