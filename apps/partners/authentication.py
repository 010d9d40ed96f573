"""`Authorization: Api-Key <prefix>.<secret>` authentication.

Keys are looked up by their prefix and verified against a SHA-512 hash (constant-time compare); a
revoked, expired or unknown key, or one whose partner is inactive, gets 401. The look-up (key, partner, employer
binding) is kept for at most 5 s in the process's `principal_cache` (ADR 0054); the secret and the expiry are
checked on every request.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from apps.partners.contracts import BEARER_PRINCIPAL_PREFIX, Principal
from apps.partners.models import APIKey, Partner
from apps.partners.principal_cache import principal_cache

KEYWORD = "Api-Key"


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[Principal, APIKey] | None:
        header = get_authorization_header(request)
        if not header:
            return None
        try:
            scheme, _, raw_key = header.decode("ascii").partition(" ")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("The Authorization header is not valid.")
        if scheme != KEYWORD or not raw_key.strip():
            raise exceptions.AuthenticationFailed(f"Use the header `Authorization: {KEYWORD} <key>`.")
        return authenticate_key(raw_key.strip())

    def authenticate_header(self, request: Request) -> str:
        return KEYWORD

    @staticmethod
    def principals_still_valid(key_prefixes: Iterable[str]) -> set[str]:
        """`api_keys_still_valid` for the API keys among principals' `key_prefix`es (the others are another
        door's)."""
        return api_keys_still_valid(p for p in key_prefixes if not p.startswith(BEARER_PRINCIPAL_PREFIX))


def authenticate_key(raw_key: str) -> tuple[Principal, APIKey]:
    """The principal and key of `raw_key` (`<prefix>.<secret>`), or `AuthenticationFailed` (401) naming why:
    unknown or wrong secret, revoked, expired, partner inactive.

    A key found valid is cached by prefix for at most 5 s (`principal_cache`, ADR 0054): within that window a
    request costs no query, but its secret is still compared with the stored hash and its expiry with the
    clock. Only valid keys are cached, so a refused key is re-read on every try."""
    prefix, dot, _secret = raw_key.partition(".")
    if not dot or len(raw_key) > 200:
        raise exceptions.AuthenticationFailed("The API key is not valid.")
    cache_key = ("api_key", prefix)
    cached: tuple[Principal, APIKey] | None = principal_cache.get(cache_key)
    # One set of checks for a cached key and a fresh one (a cached key was valid when read: only the secret and
    # the expiry can refuse it now, and the other checks cost an attribute read).
    api_key = (
        cached[1] if cached is not None else APIKey.objects.select_related("partner").filter(prefix=prefix).first()
    )
    if api_key is None or not api_key.is_valid(raw_key):
        raise exceptions.AuthenticationFailed("The API key is not valid.")
    if api_key.revoked:
        raise exceptions.AuthenticationFailed("The API key has been revoked.")
    if api_key.has_expired:
        raise exceptions.AuthenticationFailed("The API key has expired.")
    if not api_key.partner.is_active:
        raise exceptions.AuthenticationFailed("The partner is not active.")
    if cached is not None:
        return cached
    principal = principal_for(api_key)
    principal_cache.put(cache_key, (principal, api_key))
    return principal, api_key


def api_keys_still_valid(prefixes: Iterable[str]) -> set[str]:
    """The prefixes among `prefixes` whose key authenticates now — not revoked, not expired, partner active — read
    from the database in one query that builds no model (the principal cache is not asked: a revocation made in
    another process counts at once). For a caller that re-checks many open credentials at once (the live streams'
    credential sweep, apps/live/streaming.py), where authenticating each again cost ~0.1 ms of interpreter time
    per stream every second (bench/live_stream.py, 2026-12-02)."""
    wanted = sorted(set(prefixes))
    if not wanted:
        return set()
    now = timezone.now()
    return set(
        APIKey.objects.filter(prefix__in=wanted, revoked=False, partner__is_active=True)
        .filter(Q(expiry_date__isnull=True) | Q(expiry_date__gt=now))
        .values_list("prefix", flat=True)
    )


def principal_for(api_key: APIKey) -> Principal:
    """The `Principal` of a valid key: its partner, scopes, employer binding (one query for a non-platform key),
    the partner's rate limits and the key's expiry."""
    employer_ids: frozenset[int] = frozenset()
    if not api_key.all_employers:
        employer_ids = frozenset(api_key.employers.values_list("id", flat=True))
    return Principal(
        partner_id=api_key.partner_id,
        partner_name=api_key.partner.name,
        key_prefix=api_key.prefix,
        scopes=frozenset(api_key.scopes),
        all_employers=api_key.all_employers,
        employer_ids=employer_ids,
        rate_limits=partner_rate_limits(api_key.partner),
        valid_until=api_key.expiry_date.timestamp() if api_key.expiry_date else None,
    )


def partner_rate_limits(partner: Partner) -> dict[str, int]:
    """`{"minute": n, "hour": n, "day": n}`: the partner's own limits, the platform default where unset."""
    defaults = settings.API_DEFAULT_RATE_LIMITS
    return {
        "minute": partner.rate_limit_per_minute or defaults["minute"],
        "hour": partner.rate_limit_per_hour or defaults["hour"],
        "day": partner.rate_limit_per_day or defaults["day"],
    }


# How often a credential's `last_used_at` is written: it tells operators whether a key or client is still in use,
# and a write per request would make the credential's row a hot row.
LAST_USED_EVERY = timedelta(minutes=1)


def touch_last_used(credential: APIKey | Any) -> None:
    """Record that `credential` — an `APIKey` or an OAuth client, any row with `last_used_at` — was used now, at most
    once a minute per row. Two guards:

    1. in memory: a copy whose `last_used_at` is under a minute old sends nothing; after a write the copy is moved to
       now, so the requests that share it (the principal cache keeps it up to 5 s, ADR 0054) send nothing either;
    2. in the database: the `UPDATE` only writes a row whose stored use is a minute old, so a stale copy (another
       process's cached principal, or one read before the token endpoint recorded a use) writes nothing.
    """
    now = timezone.now()
    if credential.last_used_at is not None and now - credential.last_used_at <= LAST_USED_EVERY:
        return
    type(credential)._default_manager.filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_EVERY), pk=credential.pk
    ).update(last_used_at=now)
    credential.last_used_at = now
