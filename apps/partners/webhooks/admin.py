"""Operators' view of webhooks (SPEC §10, §11): endpoints (disable/enable through the services), and
read-only events, deliveries and every attempt with its status, latency, response excerpt and error."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils import timezone

from apps.common.actors import Actor
from apps.partners.contracts import PartnerAuditAction
from apps.partners.webhooks.dispatch import endpoint_disable
from apps.partners.webhooks.models import Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint


def _operator(request: HttpRequest) -> Actor:
    return Actor.operator(
        user_id=request.user.pk, username=request.user.get_username(), ip=request.META.get("REMOTE_ADDR")
    )


class _ReadOnly(admin.ModelAdmin):  # type: ignore[type-arg]
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(_ReadOnly):
    list_display = ("id", "partner", "url", "is_active", "consecutive_failures", "last_success_at", "disabled_reason")
    list_filter = ("is_active", "partner")
    search_fields = ("url", "partner__name")
    exclude = ("lease_token",)
    actions = ("disable_endpoints", "enable_endpoints")

    @admin.action(description="Disable selected endpoints (pending deliveries are given up)")
    def disable_endpoints(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        count = 0
        for endpoint in queryset:
            with transaction.atomic():
                count += endpoint_disable(endpoint_id=endpoint.pk, reason="disabled by an operator", notify=False)
        self.message_user(request, f"Disabled {count} endpoint(s).")

    @admin.action(description="Re-enable selected endpoints (new events only)")
    def enable_endpoints(self, request: HttpRequest, queryset: QuerySet[WebhookEndpoint]) -> None:
        from apps.audit.services import audit_record

        count = 0
        for endpoint in queryset.filter(is_active=False):
            with transaction.atomic():
                count += WebhookEndpoint.objects.filter(pk=endpoint.pk, is_active=False).update(
                    is_active=True,
                    disabled_at=None,
                    disabled_reason="",
                    consecutive_failures=0,
                    failing_since=None,
                    retry_at=timezone.now(),
                )
                audit_record(
                    actor=_operator(request),
                    action=PartnerAuditAction.WEBHOOK_ENDPOINT_UPDATED,
                    object_type="webhook_endpoint",
                    object_id=endpoint.pk,
                    before={"is_active": False},
                    after={"is_active": True},
                )
        self.message_user(request, f"Re-enabled {count} endpoint(s).")


@admin.register(Event)
class EventAdmin(_ReadOnly):
    list_display = (
        "public_id",
        "type",
        "partner",
        "employer_id",
        "object_type",
        "object_id",
        "sequence",
        "position",
        "created_at",
    )
    list_filter = ("type", "partner")
    search_fields = ("public_id", "object_id")


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(_ReadOnly):
    list_display = ("id", "endpoint", "event", "status", "attempts", "next_attempt_at", "last_error")
    list_filter = ("status",)
    raw_id_fields = ("endpoint", "event")


@admin.register(WebhookAttempt)
class WebhookAttemptAdmin(_ReadOnly):
    list_display = (
        "id",
        "endpoint",
        "event_public_id",
        "event_type",
        "attempt",
        "status_code",
        "latency_ms",
        "succeeded",
        "at",
        "error",
    )
    list_filter = ("succeeded", "status_code")
    search_fields = ("event_public_id",)
    raw_id_fields = ("delivery", "endpoint")
