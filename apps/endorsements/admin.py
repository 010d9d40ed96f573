from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.template.loader import render_to_string
from django.utils.safestring import SafeString

from apps.audit.selectors import insurer_exchanges
from apps.common.actors import Actor
from apps.common.admin import ReadOnlyTabularInline
from apps.common.errors import Conflict
from apps.common.money import display_rupees
from apps.endorsements import services
from apps.endorsements.models import Endorsement, EndorsementBatch, EndorsementHistory
from apps.endorsements.selectors import batch_progress
from apps.ledger.selectors import ledger_trail_for_endorsement

# Paise columns shown in rupees on the change page (never as raw paise: issue 14).
MONEY_FIELDS = ("premium_amount", "annual_premium", "sum_insured", "sum_insured_before")
EXCHANGES_SHOWN = 50


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
    # Fits a 1366 px laptop: the columns an operator scans; the rest is on the change page.
    list_display = (
        "id",
        "employer",
        "type",
        "status",
        "employee_code",
        "premium",
        "rejection_class",
        "created_at",
    )
    list_filter = ("status", "type", "insurer", "premium_direction", "rejection_class")
    search_fields = ("=id", "employee_code", "insurer_reference", "idempotency_key", "=employer__external_ref")
    date_hierarchy = "created_at"
    inlines = [HistoryInline]
    actions = ("approve_review", "decline_review", "retry_failed", "cancel")
    list_select_related = ("employer",)
    list_per_page = 50
    # A COUNT(*) over millions of rows on every page would cost more than the page; the filtered count stays.
    show_full_result_count = False
    exclude = MONEY_FIELDS
    fieldsets = (
        (None, {"fields": ("id", "employer", "policy", "insurer", "batch", "partner_id", "type", "status")}),
        ("Member", {"fields": ("employee_code", "details", "effective_date")}),
        (
            "Money (₹)",
            {"fields": ("premium", "annual_premium_rupees", "sum_insured_rupees", "sum_insured_before_rupees",
                        "remaining_days", "term_days")},
        ),
        (
            "Insurer",
            {"fields": ("insurer_reference", "rejection_class", "rejection_reason", "last_error", "idempotency_key",
                        "review_approved", "funding_generation")},
        ),
        ("Times", {"fields": ("created_at", "ready_at", "sent_at", "activated_at", "updated_at")}),
        ("Ledger entries and holds of this endorsement", {"fields": ("ledger_trail",)}),
        ("Insurer exchanges of this endorsement", {"fields": ("exchanges",)}),
    )  # fmt: skip

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        computed = ["premium", "annual_premium_rupees", "sum_insured_rupees", "sum_insured_before_rupees",
                    "ledger_trail", "exchanges"]  # fmt: skip
        return [f.name for f in Endorsement._meta.fields if f.name not in MONEY_FIELDS] + computed

    @admin.display(description="premium (₹)", ordering="premium_amount")
    def premium(self, obj: Endorsement) -> str:
        """Signed as it moves the employer's account: a debit is paid, a credit (refund) comes back."""
        if obj.premium_direction == "none":
            return "—"
        sign = "−" if obj.premium_direction == "credit" else ""
        return f"{sign}{display_rupees(obj.premium_amount)}"

    @admin.display(description="annual premium (₹)")
    def annual_premium_rupees(self, obj: Endorsement) -> str:
        return display_rupees(obj.annual_premium)

    @admin.display(description="sum insured (₹)")
    def sum_insured_rupees(self, obj: Endorsement) -> str:
        return display_rupees(obj.sum_insured) or "—"

    @admin.display(description="sum insured before (₹)")
    def sum_insured_before_rupees(self, obj: Endorsement) -> str:
        return display_rupees(obj.sum_insured_before) or "—"

    @admin.display(description="ledger")
    def ledger_trail(self, obj: Endorsement) -> SafeString:
        trail = ledger_trail_for_endorsement(endorsement_id=obj.pk)
        return render_to_string("admin/endorsements/ledger_trail.html", trail)

    @admin.display(description="exchanges")
    def exchanges(self, obj: Endorsement) -> SafeString:
        rows = list(insurer_exchanges(endorsement_id=obj.pk)[:EXCHANGES_SHOWN])
        return render_to_string("admin/endorsements/exchanges.html", {"exchanges": rows, "limit": EXCHANGES_SHOWN})

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
    list_display = ("id", "employer", "source", "accepted", "rejected", "progress", "created_at", "completed_at")
    list_filter = ("source",)
    search_fields = ("=id", "=employer__external_ref")
    list_select_related = ("employer",)
    list_per_page = 50
    show_full_result_count = False
    readonly_fields = ("progress",)

    def get_readonly_fields(self, request: HttpRequest, obj: object = None) -> list[str]:
        return ["progress"] + [f.name for f in EndorsementBatch._meta.fields]

    @admin.display(description="progress")
    def progress(self, obj: EndorsementBatch) -> SafeString:
        """Share of the accepted rows in a terminal state (one GROUP BY over the batch's rows)."""
        figures = batch_progress(obj)
        state = "cancelled" if obj.cancelled_at else ("completed" if obj.completed_at else "processing")
        return render_to_string("admin/endorsements/batch_progress.html", {"batch": obj, "state": state, **figures})

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False
