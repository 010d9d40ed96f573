from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from apps.audit.models import AuditEvent, AuditSeal, InsurerExchangeEvent, JobRunEvent, PiiAccessEvent


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _pretty(value: Any) -> str:
    return format_html("<pre>{}</pre>", json.dumps(value, indent=2, sort_keys=True, default=str))


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor", "action", "object_type", "object_id", "employer_id", "request_id")
    list_filter = ("actor_kind", "action", "object_type", ("created_at", admin.DateFieldListFilter))
    search_fields = ("=object_id", "=request_id", "=employer_id", "actor")
    readonly_fields = ("before_pretty", "after_pretty")
    date_hierarchy = "created_at"

    @admin.display(description="before")
    def before_pretty(self, obj: AuditEvent) -> str:
        return _pretty(obj.before)

    @admin.display(description="after")
    def after_pretty(self, obj: AuditEvent) -> str:
        return _pretty(obj.after)


@admin.register(PiiAccessEvent)
class PiiAccessEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor", "action", "subject_type", "subject_id", "field", "purpose")
    list_filter = ("action", "subject_type", "actor_kind")
    search_fields = ("=subject_id", "=request_id", "actor")
    date_hierarchy = "created_at"


@admin.register(InsurerExchangeEvent)
class InsurerExchangeEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "insurer_code", "direction", "operation", "response_status", "duration_ms",
                    "endorsement_id")
    list_filter = ("insurer_code", "direction", "operation", "response_status")
    search_fields = ("=endorsement_id", "=correlation_id")
    date_hierarchy = "created_at"


@admin.register(JobRunEvent)
class JobRunEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "job", "phase", "status", "counts", "error")
    list_filter = ("job", "phase", "status")
    search_fields = ("=run_id", "job")
    date_hierarchy = "created_at"


@admin.register(AuditSeal)
class AuditSealAdmin(ReadOnlyAdmin):
    list_display = ("stream", "seq", "event_id", "hash", "sealed_at")
    list_filter = ("stream",)
