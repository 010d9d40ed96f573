"""Outbox consumer of the partners app: e-mail a partner whose webhook endpoint was disabled (SPEC §10, ADR 0030)."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.mail import send_mail

from apps.outbox.contracts import Message
from apps.outbox.inbox import inbox_consume, inbox_seen
from apps.outbox.registry import consumer
from apps.partners.contracts import PartnerTopic
from apps.partners.models import Partner, WebhookEndpoint

log = logging.getLogger(__name__)


@consumer(PartnerTopic.ENDPOINT_DISABLED, queue="webhooks")
def handle_endpoint_disabled(message: Message) -> None:
    """E-mail the partner's contact that an endpoint was disabled (the send is outside any transaction;
    a crash between send and commit may send it twice, never zero times)."""
    if inbox_seen(message):
        return
    payload = message.payload
    partner = Partner.objects.filter(pk=int(payload.get("partner_id") or 0)).first()
    endpoint = WebhookEndpoint.objects.filter(pk=int(payload.get("endpoint_id") or 0)).first()
    if partner is not None and partner.contact_email and endpoint is not None:
        send_mail(
            subject=f"Keel: webhook endpoint {endpoint.pk} was disabled",
            message=(
                f"Keel disabled your webhook endpoint {endpoint.pk} ({endpoint.url}): {payload.get('reason')}.\n\n"
                "Fix the receiver, then re-enable it with PATCH /api/v1/webhook-endpoints/"
                f'{endpoint.pk} {{"is_active": true}}. Events missed meanwhile are listed by GET /api/v1/events '
                "and can be resent with POST /api/v1/events/{id}/redeliver."
            ),
            from_email=settings.DEFAULT_FROM_EMAIL,
            recipient_list=[partner.contact_email],
            fail_silently=False,
        )
    else:
        log.info("webhooks.disabled_without_contact", extra={"endpoint": payload.get("endpoint_id")})
    with inbox_consume(message):
        pass
