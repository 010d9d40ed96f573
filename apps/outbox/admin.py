from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.core.serializers.json import DjangoJSONEncoder
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from apps.outbox.models import InboxEntry, OutboxMessage, OutboxStatus
from apps.outbox.services import outbox_purge_dead, outbox_requeue


@admin.register(OutboxMessage)
class OutboxMessageAdmin(admin.ModelAdmin):
    list_display = ("id", "topic", "key", "status", "attempts", "created_at", "available_at", "last_error_short")
    list_filter = ("status", "topic")
    search_fields = ("=id", "key")
    actions = ("requeue", "purge", "export_jsonl")
    date_hierarchy = "created_at"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in OutboxMessage._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    @admin.display(description="last error")
    def last_error_short(self, obj: OutboxMessage) -> str:
        return obj.last_error[:120]

    @admin.action(description="Requeue selected dead rows")
    def requeue(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        # Only dead rows are requeued (the service re-checks); an empty selection requeues nothing.
        count = outbox_requeue(ids=list(queryset.filter(status=OutboxStatus.DEAD).values_list("pk", flat=True)))
        self.message_user(request, f"Requeued {count} dead row(s).")

    @admin.action(description="Purge selected dead rows")
    def purge(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> None:
        count = outbox_purge_dead(ids=list(queryset.values_list("pk", flat=True)))
        self.message_user(request, f"Purged {count} dead row(s).")

    @admin.action(description="Export selected rows as JSON lines")
    def export_jsonl(self, request: HttpRequest, queryset: QuerySet[OutboxMessage]) -> HttpResponse:
        lines = [
            json.dumps(
                {
                    "id": m.pk,
                    "topic": m.topic,
                    "key": m.key,
                    "payload": m.payload,
                    "status": m.status,
                    "attempts": m.attempts,
                    "created_at": m.created_at,
                    "last_error": m.last_error,
                    "last_traceback": m.last_traceback,
                    "headers": m.headers,
                    "available_at": m.available_at,
                    "published_at": m.published_at,
                    "done_at": m.done_at,
                },
                cls=DjangoJSONEncoder,
            )
            for m in queryset.order_by("id")[:10_000]
        ]
        response = HttpResponse("\n".join(lines) + "\n", content_type="application/x-ndjson")
        response["Content-Disposition"] = 'attachment; filename="outbox-export.jsonl"'
        return response


@admin.register(InboxEntry)
class InboxEntryAdmin(admin.ModelAdmin):
    list_display = ("consumer", "message_id", "processed_at")
    list_filter = ("consumer",)
    search_fields = ("=message_id",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
