"""Writes for webhook endpoints and events: register, change, rotate, disable/enable, redeliver, retention.

Every write is one transaction with its audit row (SPEC §4, §10; ADR 0030). The partner's tenancy has
already been resolved by the selectors (a foreign endpoint or event is never passed here).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from apps.audit.services import audit_record
from apps.common.actors import Actor
from apps.common.errors import Conflict, DomainValidationError
from apps.partners.contracts import PartnerAuditAction, Principal
from apps.partners.webhooks import urlpolicy
from apps.partners.webhooks.contracts import EventType, types_readable_with
from apps.partners.webhooks.dispatch import endpoint_disable
from apps.partners.webhooks.models import (
    DeliveryStatus,
    Event,
    EventSequence,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
    new_webhook_secret,
)
from apps.partners.webhooks.secrets import secret_seal

MAX_EVENT_TYPES = len(EventType.values)


def _validate(*, principal: Principal, url: str | None, event_types: Sequence[str] | None) -> dict[str, str]:
    errors: dict[str, str] = {}
    if url is not None:
        try:
            urlpolicy.check(url)
        except urlpolicy.UnsafeURL as exc:
            errors["url"] = str(exc)
    if event_types is not None:
        readable = set(types_readable_with(principal.scopes))
        unknown = [t for t in event_types if t not in EventType.values]
        if not event_types:
            errors["event_types"] = "Subscribe to at least one event type."
        elif unknown:
            errors["event_types"] = f"Unknown event type(s): {', '.join(sorted(unknown))}."
        elif not set(event_types) <= readable:
            missing = sorted(set(event_types) - readable)
            errors["event_types"] = f"This key lacks the read scope for: {', '.join(missing)}."
    return errors


@transaction.atomic
def webhook_endpoint_create(
    *, principal: Principal, url: str, event_types: Sequence[str], description: str, actor: Actor
) -> tuple[WebhookEndpoint, str]:
    """Register an endpoint for the caller's partner; returns it with its `whsec_…` secret (shown once).

    `url` must pass `urlpolicy.check` (resolved now, and again at each delivery); `event_types` must be known
    types the key may read (its read scopes). An employer-bound key's endpoint receives only its employers'
    events (`employer_ids` frozen at registration). Raises `DomainValidationError` (422) naming the field.
    """
    errors = _validate(principal=principal, url=url, event_types=event_types)
    if errors:
        raise DomainValidationError(errors)
    endpoint = WebhookEndpoint.objects.create(
        partner_id=principal.partner_id,
        url=url,
        description=description,
        event_types=sorted(set(event_types)),
        employer_ids=None if principal.all_employers else sorted(principal.employer_ids),
        created_by=principal.key_prefix,
    )
    secret = new_webhook_secret()
    WebhookSecret.objects.create(endpoint=endpoint, secret=secret_seal(secret, endpoint_id=endpoint.pk))
    audit_record(
        actor=actor,
        action=PartnerAuditAction.WEBHOOK_ENDPOINT_CREATED,
        object_type="webhook_endpoint",
        object_id=endpoint.pk,
        after={"url": url, "event_types": endpoint.event_types, "employer_ids": endpoint.employer_ids},
    )
    return endpoint, secret


@transaction.atomic
def webhook_endpoint_update(
    *,
    principal: Principal,
    endpoint: WebhookEndpoint,
    url: str | None = None,
    event_types: Sequence[str] | None = None,
    description: str | None = None,
    is_active: bool | None = None,
    actor: Actor,
) -> WebhookEndpoint:
    """Change url / event types / description, or disable (`is_active=False`) / re-enable (`True`).

    Re-enabling clears the backoff; only events from then on are delivered (missed ones are read from the
    events API or redelivered). Disabling gives up the pending deliveries. Raises `DomainValidationError`.
    """
    errors = _validate(principal=principal, url=url, event_types=event_types)
    if errors:
        raise DomainValidationError(errors)
    locked = WebhookEndpoint.objects.select_for_update().get(pk=endpoint.pk)
    before: dict[str, object] = {}
    after: dict[str, object] = {}
    changes: dict[str, object] = {}
    if url is not None and url != locked.url:
        changes["url"] = url
    if event_types is not None and sorted(set(event_types)) != locked.event_types:
        changes["event_types"] = sorted(set(event_types))
    if description is not None and description != locked.description:
        changes["description"] = description
    for name, value in changes.items():
        before[name], after[name] = getattr(locked, name), value
    if changes:
        WebhookEndpoint.objects.filter(pk=locked.pk).update(**changes)
    if is_active is False and locked.is_active:
        endpoint_disable(endpoint_id=locked.pk, reason="disabled by the partner", notify=False)
        before["is_active"], after["is_active"] = True, False
    elif is_active is True and not locked.is_active:
        WebhookEndpoint.objects.filter(pk=locked.pk).update(
            is_active=True,
            disabled_at=None,
            disabled_reason="",
            consecutive_failures=0,
            failing_since=None,
            retry_at=timezone.now(),
        )
        before["is_active"], after["is_active"] = False, True
    if after:
        # Queryset updates skip `auto_now`: stamp the change explicitly.
        WebhookEndpoint.objects.filter(pk=locked.pk).update(updated_at=timezone.now())
        audit_record(
            actor=actor,
            action=PartnerAuditAction.WEBHOOK_ENDPOINT_UPDATED,
            object_type="webhook_endpoint",
            object_id=locked.pk,
            before=before,
            after=after,
        )
    return WebhookEndpoint.objects.get(pk=locked.pk)


@transaction.atomic
def webhook_endpoint_delete(*, endpoint: WebhookEndpoint, actor: Actor) -> None:
    """Delete the endpoint with its secrets, deliveries and attempts."""
    audit_record(
        actor=actor,
        action=PartnerAuditAction.WEBHOOK_ENDPOINT_DELETED,
        object_type="webhook_endpoint",
        object_id=endpoint.pk,
        before={"url": endpoint.url, "event_types": endpoint.event_types},
    )
    WebhookEndpoint.objects.filter(pk=endpoint.pk).delete()


@transaction.atomic
def webhook_endpoint_rotate_secret(*, endpoint: WebhookEndpoint, actor: Actor) -> tuple[WebhookSecret, str]:
    """Issue a new secret; the current ones keep signing (and so verifying) for
    `WEBHOOKS["ROTATION_OVERLAP_HOURS"]` (24 h), then expire. Returns the new secret (shown once)."""
    WebhookEndpoint.objects.select_for_update().filter(pk=endpoint.pk).first()
    now = timezone.now()
    overlap_end = now + timedelta(hours=float(settings.WEBHOOKS["ROTATION_OVERLAP_HOURS"]))
    WebhookSecret.objects.filter(endpoint_id=endpoint.pk, expires_at__isnull=True).update(expires_at=overlap_end)
    WebhookSecret.objects.filter(endpoint_id=endpoint.pk, expires_at__gt=overlap_end).update(expires_at=overlap_end)
    plaintext = new_webhook_secret()
    secret = WebhookSecret.objects.create(
        endpoint_id=endpoint.pk, secret=secret_seal(plaintext, endpoint_id=endpoint.pk), created_at=now
    )
    audit_record(
        actor=actor,
        action=PartnerAuditAction.WEBHOOK_ENDPOINT_SECRET_ROTATED,
        object_type="webhook_endpoint",
        object_id=endpoint.pk,
        after={"old_secrets_expire_at": overlap_end},
    )
    return secret, plaintext


@transaction.atomic
def event_redeliver(*, event: Event, endpoints: Sequence[WebhookEndpoint], actor: Actor) -> int:
    """Queue `event` again to each given active, subscribed endpoint (same `webhook-id`). Returns how many
    deliveries were queued (0 when every such endpoint already has one pending: it is left as it is, no double
    queueing). Raises `Conflict` (409, slug `no-subscribed-endpoint`) and writes nothing when none of `endpoints`
    is active and subscribed to the event's type (and employer): a redelivery would go nowhere (ADR 0064)."""
    from apps.partners.webhooks.events import deliveries_create, endpoint_wants

    subscribed = [e for e in endpoints if e.is_active and endpoint_wants(e, event)]
    if not subscribed:
        raise Conflict(
            f"No active webhook endpoint of this caller receives `{event.type}` events like this one: nothing would "
            "be delivered. Subscribe or re-enable an endpoint (PATCH `is_active: true`), then redeliver.",
            slug="no-subscribed-endpoint",
        )
    pending = set(
        WebhookDelivery.objects.filter(event_id=event.pk, status=DeliveryStatus.PENDING).values_list(
            "endpoint_id", flat=True
        )
    )
    targets = [e for e in subscribed if e.pk not in pending]
    created = deliveries_create([event], endpoints=targets)
    audit_record(
        actor=actor,
        action=PartnerAuditAction.EVENT_REDELIVERED,
        object_type="event",
        object_id=event.public_id,
        employer_id=event.employer_id,
        after={"endpoints": [e.pk for e in targets]},
    )
    if created:
        from apps.partners.webhooks.events import _nudge_dispatcher

        transaction.on_commit(_nudge_dispatcher)
    return created


def webhooks_retention(*, batch_size: int = 5000, max_batches: int = 100) -> dict[str, int]:
    """Delete what partners can no longer ask for, in bounded batches (each one short statement), from the
    hourly `webhooks.retention` beat task. Returns rows deleted per table:
    `{"attempts", "events", "deliveries", "sequences", "secrets"}`.

    - `WebhookAttempt` rows older than `WEBHOOKS["RETENTION_DAYS"]` (30, SPEC §10);
    - `Event` rows older than that with no pending delivery, and their `WebhookDelivery` rows (pending
      deliveries never outlive the 3-day retry window, so nothing in flight goes);
    - `EventSequence` rows of objects silent for `WEBHOOKS["SEQUENCE_RETENTION_DAYS"]` (at least the event
      retention) with no event left — a later event of such an object starts again at sequence 1 (ADR 0046);
    - `WebhookSecret` rows expired (rotation overlap over) for longer than the event retention.
    At most `max_batches` × `batch_size` rows per table per run; the next run continues.
    """
    now = timezone.now()
    days = float(settings.WEBHOOKS["RETENTION_DAYS"])
    cutoff = now - timedelta(days=days)
    sequence_cutoff = now - timedelta(days=max(days, float(settings.WEBHOOKS["SEQUENCE_RETENTION_DAYS"])))
    counts = {"attempts": 0, "events": 0, "deliveries": 0, "sequences": 0, "secrets": 0}

    def batches(queryset: QuerySet[Any], table: str) -> None:
        for _ in range(max_batches):
            ids = list(queryset.order_by("pk").values_list("pk", flat=True)[:batch_size])
            if not ids:
                return
            counts[table] += queryset.model.objects.filter(pk__in=ids).delete()[0]
            if len(ids) < batch_size:
                return

    batches(WebhookAttempt.objects.filter(at__lt=cutoff), "attempts")
    for _ in range(max_batches):
        ids = list(
            Event.objects.filter(created_at__lt=cutoff)
            .exclude(deliveries__status=DeliveryStatus.PENDING)
            .order_by("id")
            .values_list("pk", flat=True)[:batch_size]
        )
        if not ids:
            break
        with transaction.atomic():
            # A redelivery's attempts can be younger than the event: they go with it.
            counts["attempts"] += WebhookAttempt.objects.filter(delivery__event_id__in=ids).delete()[0]
            counts["deliveries"] += WebhookDelivery.objects.filter(event_id__in=ids).delete()[0]
            counts["events"] += Event.objects.filter(pk__in=ids).delete()[0]
        if len(ids) < batch_size:
            break
    left = Event.objects.filter(object_type=OuterRef("object_type"), object_id=OuterRef("object_id"))
    batches(EventSequence.objects.filter(updated_at__lt=sequence_cutoff).exclude(Exists(left)), "sequences")
    batches(WebhookSecret.objects.filter(expires_at__lt=cutoff), "secrets")
    return counts
