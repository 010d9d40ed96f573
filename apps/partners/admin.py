from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey as LibraryAPIKey

from apps.common.actors import Actor
from apps.partners.models import APIKey, Partner
from apps.partners.services import api_key_create, api_key_reset_rate_limits, api_key_revoke

admin.site.unregister(LibraryAPIKey)


def _operator(request: HttpRequest) -> Actor:
    return Actor.operator(
        user_id=request.user.pk, username=request.user.get_username(), ip=request.META.get("REMOTE_ADDR")
    )


@admin.register(Partner)
class PartnerAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "is_active",
        "rate_limit_per_minute",
        "rate_limit_per_hour",
        "rate_limit_per_day",
        "contact_email",
        "created_at",
    )
    search_fields = ("name",)
    list_filter = ("is_active",)


@admin.register(APIKey)
class PartnerAPIKeyAdmin(APIKeyModelAdmin):
    list_display = (  # type: ignore[assignment]
        "prefix",
        "name",
        "partner",
        "scopes",
        "all_employers",
        "revoked",
        "expiry_date",
        "last_used_at",
        "created",
    )
    list_filter = ("partner", "revoked", "all_employers")  # type: ignore[assignment]
    search_fields = ("prefix", "name", "partner__name")  # type: ignore[assignment]
    filter_horizontal = ("employers",)
    readonly_fields = ("prefix", "revoked", "revoked_at", "last_used_at", "created")
    actions = ("revoke_keys", "reset_rate_limits")

    def save_model(self, request: HttpRequest, obj: Any, form: Any = None, change: bool = False) -> None:
        if change:
            # Editing name/expiry/scopes of an existing key; revocation goes through the action.
            super(APIKeyModelAdmin, self).save_model(request, obj, form, change)
            return
        api_key, plaintext = api_key_create(
            partner=obj.partner,
            name=obj.name,
            scopes=obj.scopes,
            all_employers=obj.all_employers,
            expires_at=obj.expiry_date,
            employer_ids=[e.pk for e in form.cleaned_data.get("employers", [])],
            actor=_operator(request),
        )
        obj.pk, obj.prefix = api_key.pk, api_key.prefix
        obj._state.adding = False
        messages.warning(request, f"The API key is: {plaintext} — store it now; it is not shown again.")

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        if change:
            super().save_related(request, form, formsets, change)

    @admin.action(description="Revoke selected keys (cannot be undone)")
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        for api_key in queryset:
            api_key_revoke(prefix=api_key.prefix, actor=_operator(request))
        self.message_user(request, f"Revoked {queryset.count()} key(s).")

    @admin.action(description="Reset rate-limit counters")
    def reset_rate_limits(self, request: HttpRequest, queryset: QuerySet[APIKey]) -> None:
        for api_key in queryset:
            api_key_reset_rate_limits(api_key=api_key, actor=_operator(request))
        self.message_user(request, f"Reset rate limits of {queryset.count()} key(s).")


# Webhook endpoints, events, deliveries and attempts (SPEC §10) register themselves.
from apps.partners.webhooks import admin as webhooks_admin  # noqa: E402, F401
