"""`Authorization: Api-Key <prefix>.<secret>` authentication.

Keys are looked up by their prefix and verified against a SHA-512 hash (constant-time compare); a
revoked, expired or unknown key, or one whose partner is inactive, gets 401.
"""

from __future__ import annotations

from django.conf import settings
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, get_authorization_header
from rest_framework.request import Request

from apps.partners.contracts import Principal
from apps.partners.models import APIKey, Partner

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
        api_key = authenticate_key(raw_key.strip())
        return principal_for(api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        return KEYWORD


def authenticate_key(raw_key: str) -> APIKey:
    prefix, dot, _secret = raw_key.partition(".")
    if not dot or len(raw_key) > 200:
        raise exceptions.AuthenticationFailed("The API key is not valid.")
    api_key = APIKey.objects.select_related("partner").filter(prefix=prefix).first()
    if api_key is None or not api_key.is_valid(raw_key):
        raise exceptions.AuthenticationFailed("The API key is not valid.")
    if api_key.revoked:
        raise exceptions.AuthenticationFailed("The API key has been revoked.")
    if api_key.has_expired:
        raise exceptions.AuthenticationFailed("The API key has expired.")
    if not api_key.partner.is_active:
        raise exceptions.AuthenticationFailed("The partner is not active.")
    return api_key


def principal_for(api_key: APIKey) -> Principal:
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
    )


def partner_rate_limits(partner: Partner) -> dict[str, int]:
    defaults = settings.API_DEFAULT_RATE_LIMITS
    return {
        "minute": partner.rate_limit_per_minute or defaults["minute"],
        "hour": partner.rate_limit_per_hour or defaults["hour"],
        "day": partner.rate_limit_per_day or defaults["day"],
    }


def touch_last_used(api_key: APIKey) -> None:
    """Record use at most once a minute per key (a write per request would be a hot row)."""
    now = timezone.now()
    if api_key.last_used_at is None or (now - api_key.last_used_at).total_seconds() > 60:
        APIKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
