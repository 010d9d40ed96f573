from __future__ import annotations

from django.contrib import admin

from apps.common.admin import ReadOnlyAdmin
from apps.insurers.models import CallbackEvent, Insurer, InsurerSubmission
from apps.insurers.sandbox.models import SandboxApplied, SandboxConfig


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


@admin.register(InsurerSubmission)
class InsurerSubmissionAdmin(ReadOnlyAdmin):
    list_display = ("id", "insurer", "endorsement_id", "kind", "last_outcome", "attempts", "sent_at", "responded_at")
    list_filter = ("last_outcome", "insurer", "rejection_class")
    search_fields = ("=endorsement_id", "=idempotency_key", "insurer_reference")
    date_hierarchy = "sent_at"


@admin.register(CallbackEvent)
class CallbackEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "insurer", "webhook_id", "item_index", "event_type", "outcome", "published", "received_at")
    list_filter = ("insurer", "event_type", "published")
    search_fields = ("=webhook_id", "insurer_reference")
    date_hierarchy = "received_at"


@admin.register(SandboxConfig)
class SandboxConfigAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Test tooling: operators and developers may edit it freely."""

    list_display = ("code", "mode", "latency_ms", "failure_rate", "callback_url", "updated_at")


@admin.register(SandboxApplied)
class SandboxAppliedAdmin(ReadOnlyAdmin):
    list_display = ("id", "code", "endorsement_id", "kind", "outcome", "insurer_reference", "times_seen")
    list_filter = ("code", "outcome", "kind")
    search_fields = ("=idempotency_key", "=endorsement_id", "insurer_reference")
