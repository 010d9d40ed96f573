from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from apps.common.actors import Actor
from apps.employers.models import Employer, Insurer
from apps.employers.services import EMPLOYER_MUTABLE_FIELDS, employer_update


@admin.register(Insurer)
class InsurerAdmin(admin.ModelAdmin):
    list_display = (
        "code",
        "name",
        "protocol",
        "is_active",
        "rate_limit_per_minute",
        "batch_size",
        "batch_window_seconds",
    )
    list_filter = ("protocol", "is_active")
    search_fields = ("code", "name")
    exclude = ("credentials",)


@admin.register(Employer)
class EmployerAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "external_ref", "partner", "status", "low_balance_threshold", "created_at")
    list_filter = ("status", "partner")
    search_fields = ("name", "external_ref")
    readonly_fields = ("partner", "external_ref", "created_at", "updated_at")

    def get_readonly_fields(self, request: HttpRequest, obj: Employer | None = None) -> Any:
        return self.readonly_fields if obj else ("created_at", "updated_at")

    def save_model(self, request: HttpRequest, obj: Employer, form: Any, change: bool) -> None:
        actor = Actor.operator(
            user_id=request.user.pk, username=request.user.get_username(), ip=request.META.get("REMOTE_ADDR")
        )
        if not change:
            from apps.employers.services import employer_create

            created = employer_create(
                partner_id=obj.partner_id,
                name=obj.name,
                external_ref=obj.external_ref,
                actor=actor,
                low_balance_threshold=obj.low_balance_threshold,
                contact_email=obj.contact_email,
                velocity_limit_per_hour=obj.velocity_limit_per_hour,
                status=obj.status,
            )
            obj.pk = created.pk
            obj._state.adding = False
            return
        changes = {f: form.cleaned_data[f] for f in form.changed_data if f in EMPLOYER_MUTABLE_FIELDS}
        employer_update(employer=obj, changes=changes, actor=actor)
