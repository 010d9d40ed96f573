from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.common.actors import Actor
from apps.common.admin import ReadOnlyTabularInline
from apps.common.errors import Conflict
from apps.endorsements import services
from apps.endorsements.models import Endorsement, EndorsementBatch, EndorsementHistory


def _operator(request: HttpRequest) -> Actor:
    return Actor.operator(
        user_id=request.user.pk, username=request.user.get_username(), ip=request.META.get("REMOTE_ADDR")
    )


class HistoryInline(ReadOnlyTabularInline):
    model = EndorsementHistory
    fields = ("at", "from_status", "to_status", "detail", "actor")
    readonly_fields = fields


@admin.register(Endorsement)
class EndorsementAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "employer",
        "insurer",
        "type",
        "status",
        "employee_code",
        "effective_date",
        "premium_amount",
        "premium_direction",
        "rejection_class",
        "created_at",
    )
    list_filter = ("status", "type", "insurer", "premium_direction", "rejection_class", "employer")
    search_fields = ("=id", "employee_code", "insurer_reference", "idempotency_key")
    date_hierarchy = "created_at"
    inlines = [HistoryInline]
    actions = ("approve_review", "decline_review", "retry_failed", "cancel")
    list_select_related = ("employer", "insurer")

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [f.name for f in Endorsement._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def _each(self, request: HttpRequest, queryset: QuerySet[Endorsement], action, label: str) -> None:  # type: ignore[no-untyped-def]
        done, refused = 0, []
        for endorsement in queryset.order_by("id"):
            try:
                action(endorsement)
                done += 1
            except Conflict as exc:
                refused.append(f"{endorsement.pk}: {exc.detail}")
        self.message_user(request, f"{label}: {done} endorsement(s).")
        if refused:
            self.message_user(request, "Refused — " + "; ".join(refused[:20]), level=messages.WARNING)

    @admin.action(description="Approve review (ON_HOLD_REVIEW → continues)")
    def approve_review(self, request: HttpRequest, queryset: QuerySet[Endorsement]) -> None:
        actor = _operator(request)
        self._each(
            request,
            queryset,
            lambda e: services.endorsement_review_decide(
                endorsement=e, approve=True, reason="approved in admin", actor=actor
            ),
            "Approved",
        )

    @admin.action(description="Decline review (ON_HOLD_REVIEW → REJECTED)")
    def decline_review(self, request: HttpRequest, queryset: QuerySet[Endorsement]) -> None:
        actor = _operator(request)
        self._each(
            request,
            queryset,
            lambda e: services.endorsement_review_decide(
                endorsement=e, approve=False, reason="declined in admin", actor=actor
            ),
            "Declined",
        )

    @admin.action(description="Retry FAILED")
    def retry_failed(self, request: HttpRequest, queryset: QuerySet[Endorsement]) -> None:
        actor = _operator(request)
        self._each(request, queryset, lambda e: services.endorsement_retry(endorsement=e, actor=actor), "Retried")

    @admin.action(description="Cancel (before SENT)")
    def cancel(self, request: HttpRequest, queryset: QuerySet[Endorsement]) -> None:
        actor = _operator(request)
        self._each(request, queryset, lambda e: services.endorsement_cancel(endorsement=e, actor=actor), "Cancelled")


@admin.register(EndorsementBatch)
class EndorsementBatchAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "employer",
        "policy",
        "source",
        "total_rows",
        "accepted",
        "rejected",
        "created_at",
        "completed_at",
        "cancelled_at",
    )
    list_filter = ("source", "employer")

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return [f.name for f in EndorsementBatch._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
