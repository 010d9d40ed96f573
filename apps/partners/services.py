"""Writes for partners and their API keys."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.common.actors import Actor
from apps.common.errors import DomainValidationError
from apps.partners.contracts import PartnerAuditAction
from apps.partners.models import APIKey, Partner, Scope
from apps.partners.ownership import employer_partners
from apps.partners.principal_cache import principal_cache_clear
from apps.partners.ratelimit import rate_limit_reset


@transaction.atomic
def partner_create(*, name: str, actor: Actor) -> Partner:
    partner = Partner.objects.create(name=name)
    audit_record(
        actor=actor,
        action=PartnerAuditAction.PARTNER_CREATED,
        object_type="partner",
        object_id=partner.pk,
        after={"name": name},
    )
    return partner


def grant_errors(
    *, partner_id: int, partner_name: str, scopes: list[str], employer_ids: list[int], all_employers: bool
) -> dict[str, str]:
    """What is wrong with a credential's grant — the one rule for API keys and OAuth clients (SPEC §2): known
    scopes, at least one; every employer of the partner (`all_employers`) or listed employers that belong to
    it, not both and not neither. Returns `{field: message}` (`scopes`, `employers`), empty when it is valid."""
    errors: dict[str, str] = {}
    unknown = [s for s in scopes if s not in Scope.values]
    if unknown:
        errors["scopes"] = f"unknown scope(s): {', '.join(unknown)}; valid: {', '.join(Scope.values)}"
    if not scopes:
        errors["scopes"] = "at least one scope is required"
    if all_employers == bool(employer_ids):
        errors["employers"] = "give either employer ids or all_employers, not both and not neither"
    if employer_ids:
        found = {pk for pk, owner in employer_partners(employer_ids).items() if owner == partner_id}
        missing = [str(e) for e in employer_ids if e not in found]
        if missing:
            errors["employers"] = f"employer(s) {', '.join(missing)} do not exist for partner {partner_name}"
    return errors


@transaction.atomic
def api_key_create(
    *,
    partner: Partner,
    name: str,
    scopes: Iterable[str],
    employer_ids: Iterable[int] = (),
    all_employers: bool = False,
    expires_at: datetime | None = None,
    actor: Actor,
) -> tuple[APIKey, str]:
    """Create a key and return it with its plaintext — the only time the plaintext exists.

    A key acts either for every employer of its partner (`all_employers`) or for the listed ones, which
    must belong to the same partner.
    """
    scopes = sorted(set(scopes))
    employer_ids = sorted(set(employer_ids))
    errors = grant_errors(
        partner_id=partner.pk,
        partner_name=partner.name,
        scopes=scopes,
        employer_ids=employer_ids,
        all_employers=all_employers,
    )
    if expires_at is not None and expires_at <= timezone.now():
        errors["expires_at"] = "must be in the future"
    if errors:
        raise DomainValidationError(errors)

    api_key, plaintext = APIKey.objects.create_key(  # type: ignore[assignment]
        name=name[:50], partner=partner, scopes=scopes, all_employers=all_employers, expiry_date=expires_at
    )
    assert isinstance(api_key, APIKey)
    if employer_ids:
        api_key.employers.set(employer_ids)
    audit_record(
        actor=actor,
        action=PartnerAuditAction.API_KEY_CREATED,
        object_type="api_key",
        object_id=api_key.prefix,
        after={
            "partner": partner.name,
            "scopes": scopes,
            "employers": employer_ids,
            "all_employers": all_employers,
            "expires_at": expires_at,
        },
    )
    return api_key, plaintext


@transaction.atomic
def api_key_revoke(*, prefix: str, actor: Actor) -> APIKey:
    api_key = APIKey.objects.select_for_update().get(prefix=prefix)
    if not api_key.revoked:
        now = timezone.now()
        APIKey.objects.filter(pk=api_key.pk, revoked=False).update(revoked=True, revoked_at=now)
        api_key.revoked, api_key.revoked_at = True, now
        principal_cache_clear()  # this process at once; every other within 5 s (ADR 0054)
        audit_record(
            actor=actor,
            action=PartnerAuditAction.API_KEY_REVOKED,
            object_type="api_key",
            object_id=prefix,
            before={"revoked": False},
            after={"revoked": True},
        )
    return api_key


def api_key_reset_rate_limits(*, api_key: APIKey, actor: Actor) -> None:
    rate_limit_reset(key_prefix=api_key.prefix)
    with transaction.atomic():
        audit_record(
            actor=actor,
            action=PartnerAuditAction.API_KEY_RATE_LIMITS_RESET,
            object_type="api_key",
            object_id=api_key.prefix,
        )
