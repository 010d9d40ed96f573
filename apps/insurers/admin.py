from __future__ import annotations

from collections.abc import Callable

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.common.actors import Actor
from apps.common.admin import ReadOnlyAdmin
from apps.common.errors import Conflict
from apps.insurers.conflicts import insurer_conflict_accept, insurer_conflict_request_reversal
from apps.insurers.models import CallbackEvent, Insurer, InsurerConflict, InsurerSubmission
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


@admin.register(InsurerConflict)
class InsurerConflictAdmin(ReadOnlyAdmin):
    """Insurer results that contradict a decided state (issue 8, kind 11). Each action goes through
    `apps.insurers.conflicts` and is audited; a refusal (e.g. no funds to hold again) changes nothing."""

    list_display = (
        "id",
        "insurer",
        "endorsement_id",
        "insurer_outcome",
        "keel_status",
        "status",
        "source",
        "occurrences",
        "detected_at",
        "resolved_by",
    )
    list_filter = ("status", "insurer", "insurer_outcome", "keel_status", "source")
    search_fields = ("=endorsement_id", "insurer_reference")
    date_hierarchy = "detected_at"
    actions = ("accept_insurer_result", "request_reversal")

    def _each(
        self, request: HttpRequest, queryset: QuerySet[InsurerConflict], action: Callable[..., object], label: str
    ) -> None:
        actor = Actor.operator(
            user_id=request.user.pk, username=request.user.get_username(), ip=request.META.get("REMOTE_ADDR")
        )
        done, refused = 0, []
        for conflict in queryset.order_by("id"):
            try:
                action(conflict_id=conflict.pk, actor=actor)
                done += 1
            except Conflict as exc:
                refused.append(f"{conflict.pk}: {exc.detail}")
        self.message_user(request, f"{label}: {done} conflict(s).")
        if refused:
            self.message_user(request, "Refused — " + "; ".join(refused[:20]), level=messages.WARNING)

    @admin.action(description="Accept the insurer's result (hold and capture again / apply the rejection)")
    def accept_insurer_result(self, request: HttpRequest, queryset: QuerySet[InsurerConflict]) -> None:
        self._each(request, queryset, insurer_conflict_accept, "Accepted")

    @admin.action(description="Keep Keel's decision: ask the insurer to reverse its result")
    def request_reversal(self, request: HttpRequest, queryset: QuerySet[InsurerConflict]) -> None:
        self._each(request, queryset, insurer_conflict_request_reversal, "Reversal requested")
