"""Reads for webhook endpoints, attempts and events, always through the caller's `Principal` (SPEC §2, §10).

Anything another partner owns — or, for an employer-bound key, another employer's — is simply absent:
the views answer 404, never 403 with data.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Q, QuerySet
from django.http import Http404

from apps.partners.contracts import Principal
from apps.partners.ownership import employer_partners
from apps.partners.webhooks.contracts import READ_SCOPE_OF_OBJECT_TYPE, read_scope_of, types_readable_with
from apps.partners.webhooks.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint


def webhook_endpoints_visible_to(principal: Principal) -> QuerySet[WebhookEndpoint]:
    """The partner's endpoints; an employer-bound key sees those bound to a subset of its employers."""
    qs = WebhookEndpoint.objects.filter(partner_id=principal.partner_id)
    if principal.all_employers:
        return qs.order_by("id")
    visible = [
        e.pk
        for e in qs.exclude(employer_ids__isnull=True).only("id", "employer_ids")
        if set(e.employer_ids or []) <= principal.employer_ids
    ]
    return qs.filter(pk__in=visible).order_by("id")


def webhook_endpoint_get_for(principal: Principal, endpoint_id: int) -> WebhookEndpoint:
    endpoint = webhook_endpoints_visible_to(principal).filter(pk=endpoint_id).first()
    if endpoint is None:
        raise Http404("No webhook endpoint with this id.")
    return endpoint


def webhook_attempts_of(endpoint: WebhookEndpoint) -> QuerySet[WebhookAttempt]:
    return WebhookAttempt.objects.filter(endpoint_id=endpoint.pk)


def events_visible_to(principal: Principal) -> QuerySet[Event]:
    """Committed (positioned) events of the caller's partner, of types its read scopes allow, of the
    employers it may act for (events without an employer — loan applications — go to the partner's keys)."""
    qs = Event.objects.filter(
        partner_id=principal.partner_id,
        position__isnull=False,
        type__in=types_readable_with(principal.scopes),
    )
    if not principal.all_employers:
        qs = qs.filter(Q(employer_id__isnull=True) | Q(employer_id__in=sorted(principal.employer_ids)))
    return qs


def event_filter_refusal(
    principal: Principal, *, types: Iterable[str], employer_id: int | None, object_types: Iterable[str] = ()
) -> tuple[int, str] | None:
    """Why a reader of events (`GET /api/v1/events`, the stream) may not filter on these values, or None.

    `types` are valid event types the caller asked for, `object_types` valid object types (`EventObjectType`);
    `employer_id` a positive id or None. Returns `(403, detail)` for the first type or object type whose read
    scope the caller lacks, `(404, "No employer with this id.")`
    for an employer it may not act for (SPEC §2: a filter naming an object the key may not see is 404, as a path
    would be), else None. One query at most (the employer's partner). ADR 0064."""
    unreadable = sorted(set(types) - set(types_readable_with(principal.scopes)))
    if unreadable:
        return 403, f"This {principal.credential_name} lacks the `{read_scope_of(unreadable[0])}` scope."
    lacking = sorted({READ_SCOPE_OF_OBJECT_TYPE[o] for o in object_types} - principal.scopes)
    if lacking:
        return 403, f"This {principal.credential_name} lacks the `{lacking[0]}` scope."
    if employer_id is not None:
        owner = employer_partners([employer_id]).get(employer_id)
        if owner is None or not principal.may_act_for(employer_id=employer_id, employer_partner_id=owner):
            return 404, "No employer with this id."
    return None


def event_get_for(principal: Principal, public_id: str) -> Event:
    event = events_visible_to(principal).filter(public_id=public_id).first()
    if event is None:
        raise Http404("No event with this id.")
    return event


def webhook_deliveries_recent(*, limit: int = 10) -> list[WebhookDelivery]:
    """The `limit` most recent webhook deliveries of every partner, newest first (the /ops/ panel: operators
    only, never an API caller). One query on the primary key index; `limit` ≥ 0."""
    return list(WebhookDelivery.objects.order_by("-id")[:limit])
