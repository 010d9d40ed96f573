"""Read-only admin for the audit streams: operators browse and filter, nobody adds, edits or deletes.

The tables grow without bound, so the changelists avoid whole-table work: no full result count, no
date_hierarchy (it runs a DISTINCT over dates), and the employer filter only lists employers seen recently.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString

from apps.audit.models import (
    AuditChainHead,
    AuditEvent,
    AuditSeal,
    InsurerExchangeEvent,
    JobRunEvent,
    PiiAccessEvent,
)
from apps.common.admin import ReadOnlyAdmin


def pretty_json(value: Any) -> SafeString:
    return format_html(
        '<pre style="white-space: pre-wrap; margin: 0">{}</pre>',
        json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str),
    )


def pretty_body(text: str) -> SafeString:
    """A stored exchange body, indented when it is JSON (it may be XML, text or truncated JSON)."""
    try:
        return pretty_json(json.loads(text))
    except ValueError:
        return format_html('<pre style="white-space: pre-wrap; margin: 0">{}</pre>', text)


class RecentEmployerFilter(admin.SimpleListFilter):
    """Employers among the newest events (a DISTINCT over the whole table would scan it); any other employer
    is reachable with ?employer_id=N or the search box."""

    title = "employer"
    parameter_name = "employer_id"
    sample_size = 5000

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        recent = AuditEvent.objects.order_by("-id").values_list("employer_id", flat=True)[: self.sample_size]
        ids = sorted({employer_id for employer_id in recent if employer_id is not None})
        return [(str(employer_id), f"#{employer_id}") for employer_id in ids[:100]]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        if value and value.isdigit():
            return queryset.filter(employer_id=int(value))
        return queryset


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor", "action", "object_type", "object_id", "employer_id", "request_id")
    list_filter = (
        ("created_at", admin.DateFieldListFilter),
        "actor_kind",
        "object_type",
        "action",
        RecentEmployerFilter,
    )
    search_fields = ("=object_id", "=request_id", "=actor")
    fields = (
        "created_at",
        "actor",
        "actor_kind",
        "partner_id",
        "ip",
        "request_id",
        "action",
        "object_type",
        "object_id",
        "employer_id",
        "before_pretty",
        "after_pretty",
    )
    readonly_fields = fields

    @admin.display(description="before")
    def before_pretty(self, obj: AuditEvent) -> SafeString:
        return pretty_json(obj.before)

    @admin.display(description="after")
    def after_pretty(self, obj: AuditEvent) -> SafeString:
        return pretty_json(obj.after)


@admin.register(PiiAccessEvent)
class PiiAccessEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "actor", "action", "subject_type", "subject_id", "field", "purpose")
    list_filter = (("created_at", admin.DateFieldListFilter), "action", "actor_kind", "subject_type", "field")
    search_fields = ("=subject_id", "=request_id", "=actor")


@admin.register(InsurerExchangeEvent)
class InsurerExchangeEventAdmin(ReadOnlyAdmin):
    list_display = (
        "created_at",
        "insurer_code",
        "direction",
        "operation",
        "response_status",
        "duration_ms",
        "endorsement_id",
        "correlation_id",
    )
    list_filter = (
        ("created_at", admin.DateFieldListFilter),
        "insurer_code",
        "direction",
        "operation",
        "response_status",
    )
    search_fields = ("=endorsement_id", "=correlation_id")
    fields = (
        "created_at",
        "insurer_code",
        "direction",
        "operation",
        "endpoint",
        "correlation_id",
        "endorsement_id",
        "response_status",
        "duration_ms",
        "error",
        "request_pretty",
        "response_pretty",
    )
    readonly_fields = fields

    @admin.display(description="request body")
    def request_pretty(self, obj: InsurerExchangeEvent) -> SafeString:
        return pretty_body(obj.request_body)

    @admin.display(description="response body")
    def response_pretty(self, obj: InsurerExchangeEvent) -> SafeString:
        return pretty_body(obj.response_body)


@admin.register(JobRunEvent)
class JobRunEventAdmin(ReadOnlyAdmin):
    list_display = ("created_at", "job", "phase", "status", "counts", "error")
    list_filter = (("created_at", admin.DateFieldListFilter), "status", "phase", "job")
    search_fields = ("=run_id", "=job")
    fields = ("created_at", "run_id", "job", "phase", "status", "params_pretty", "counts_pretty", "error")
    readonly_fields = fields

    @admin.display(description="params")
    def params_pretty(self, obj: JobRunEvent) -> SafeString:
        return pretty_json(obj.params)

    @admin.display(description="counts")
    def counts_pretty(self, obj: JobRunEvent) -> SafeString:
        return pretty_json(obj.counts)


@admin.register(AuditSeal)
class AuditSealAdmin(ReadOnlyAdmin):
    list_display = ("stream", "seq", "event_id", "hash", "sealed_at")
    list_filter = ("stream",)
    search_fields = ("=event_id", "=hash")


@admin.register(AuditChainHead)
class AuditChainHeadAdmin(ReadOnlyAdmin):
    """Where each chain ends: operators copy `stream:seq:last_hash` off-site for `audit_verify --expect-head`."""

    list_display = ("stream", "seq", "last_hash", "floor_event_id", "updated_at")
