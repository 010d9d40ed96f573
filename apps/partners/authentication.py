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
    def principals_preload(key_prefixes: Iterable[str]) -> None:
        """`api_keys_preload` for the API keys among principals' `key_prefix`es (the others are another door's)."""
        api_keys_preload(p for p in key_prefixes if not p.startswith(BEARER_PRINCIPAL_PREFIX))


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


def api_keys_preload(prefixes: Iterable[str]) -> None:
    """Put the keys of `prefixes` that `principal_cache` does not hold, and that are valid now (not revoked, not
    expired, partner active), into it — one query for the keys and one for the employer bindings of those bound to
    employers, instead of two per key. For a caller about to authenticate many keys at once (the live streams'
    credential sweep: their cache entries, made together when the streams opened, expire together). The checks
    `authenticate_key` makes on a cached key still apply; an unknown or invalid key is simply not cached."""
    missing = sorted({p for p in prefixes if principal_cache.get(("api_key", p)) is None})
    if not missing:
        return
    keys = [
        k
        for k in APIKey.objects.select_related("partner").filter(prefix__in=missing)
        if not k.revoked and not k.has_expired and k.partner.is_active
    ]
    bound = employer_bindings(APIKey, [k.pk for k in keys if not k.all_employers])
    for key in keys:
        principal = principal_for(key, employer_ids=bound.get(key.pk, frozenset()))
        principal_cache.put(("api_key", key.prefix), (principal, key))


def employer_bindings(model: type[Any], ids: Iterable[Any]) -> dict[Any, frozenset[int]]:
    """`{primary key: employer ids}` for the credentials `ids` of `model` (an `APIKey`, whose key is text, or an
    OAuth client: any model with an `employers` many-to-many), in one query; one bound to none maps to an empty
    set."""
    ids = list(ids)
    if not ids:
        return {}
    relation = model._meta.get_field("employers")
    source, target = relation.m2m_field_name(), relation.m2m_reverse_field_name()
    rows = relation.remote_field.through.objects.filter(**{f"{source}__in": ids})
    bound: dict[Any, set[int]] = {pk: set() for pk in ids}
    for owner, employer in rows.values_list(f"{source}_id", f"{target}_id"):
        bound[owner].add(employer)
    return {pk: frozenset(employers) for pk, employers in bound.items()}


def principal_for(api_key: APIKey, *, employer_ids: frozenset[int] | None = None) -> Principal:
    """The `Principal` of a valid key: its partner, scopes, employer binding (one query for a non-platform key,
    unless the caller read it: `employer_ids`) and the partner's rate limits."""
    if api_key.all_employers:
        employer_ids = frozenset()
    elif employer_ids is None:
        employer_ids = frozenset(api_key.employers.values_list("id", flat=True))
    return Principal(
        partner_id=api_key.partner_id,
        partner_name=api_key.partner.name,
        key_prefix=api_key.prefix,
        scopes=frozenset(api_key.scopes),
        all_employers=api_key.all_employers,
        employer_ids=employer_ids,
        rate_limits=partner_rate_limits(api_key.partner),
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
