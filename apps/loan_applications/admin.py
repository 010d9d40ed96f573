"""Operators' view of loan applications: masked PANs only (each mask is in the PII access log), read-only
fields, and approve/decline actions for MANUAL_REVIEW that call the service — never `.save()`."""

from __future__ import annotations

import contextvars
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.helpers import ActionForm
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse

from apps.common.actors import Actor
from apps.common.admin import ReadOnlyTabularInline
from apps.common.errors import ProblemError
from apps.common.money import format_minor
from apps.loan_applications import services
from apps.loan_applications.models import CreditReport, LoanApplication, LoanDecision, LoanStatus

# The operator whose page is being rendered: list/detail display methods get no request, but every mask
# must be attributed to a person in the PII access log.
_operator: contextvars.ContextVar[Actor | None] = contextvars.ContextVar("loan_admin_operator", default=None)


def _actor(request: HttpRequest) -> Actor:
    user = request.user
    return Actor.operator(user_id=user.pk, username=user.get_username(), ip=request.META.get("REMOTE_ADDR"))


class LoanDecisionActionForm(ActionForm):
    reason = forms.CharField(
        required=False, max_length=500, label="Reason", help_text="Required to approve or decline."
    )


class CreditReportInline(ReadOnlyTabularInline):
    model = CreditReport
    fields = ("bureau", "score", "factors", "created_at")
    readonly_fields = fields


class LoanDecisionInline(ReadOnlyTabularInline):
    model = LoanDecision
    fields = ("kind", "status", "reasons", "rule_set_version", "input_hash", "note", "decided_by", "created_at")
    readonly_fields = fields


@admin.register(LoanApplication)
class LoanApplicationAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "partner",
        "pan_masked",
        "status",
        "loan_type",
        "credit_score",
        "monthly_income_display",
        "requested_amount_display",
        "created_at",
        "decided_at",
    )
    list_filter = ("status", "loan_type", "partner", "created_at")
    list_select_related = ("partner",)
    search_fields = ("=id",)
    date_hierarchy = "created_at"
    ordering = ("-id",)
    actions = ("approve_selected", "decline_selected")
    action_form = LoanDecisionActionForm
    inlines = (CreditReportInline, LoanDecisionInline)
    fields = (
        "id",
        "partner",
        "pan_masked",
        "pan_key_version",
        "first_name",
        "last_name",
        "date_of_birth",
        "email",
        "phone_number",
        "monthly_income_display",
        "requested_amount_display",
        "loan_type",
        "consent",
        "status",
        "credit_score",
        "scored_at",
        "decision_reasons",
        "rule_set_version",
        "decision_input_hash",
        "max_approved_amount_display",
        "version",
        "created_at",
        "decided_at",
        "decided_by",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The detail page is read-only: state changes only through the decide actions (services).
        return False

    def has_decide_permission(self, request: HttpRequest) -> bool:
        return bool(request.user.has_perm("loan_applications.change_loanapplication"))

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        token = _operator.set(_actor(request))
        try:
            response = super().changelist_view(request, extra_context)
            if hasattr(response, "render"):
                response.render()  # render while the operator is known (display methods run here)
            return response
        finally:
            _operator.reset(token)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        token = _operator.set(_actor(request))
        try:
            response = super().change_view(request, object_id, form_url, extra_context)
            if hasattr(response, "render"):
                response.render()
            return response
        finally:
            _operator.reset(token)

    @admin.display(description="PAN")
    def pan_masked(self, obj: LoanApplication) -> str:
        actor = _operator.get() or Actor.system("admin")
        return services.pan_masked_for(application=obj, actor=actor, purpose="operator admin view")

    @admin.display(description="monthly income (₹)", ordering="monthly_income")
    def monthly_income_display(self, obj: LoanApplication) -> str:
        return format_minor(obj.monthly_income)

    @admin.display(description="requested amount (₹)", ordering="requested_amount")
    def requested_amount_display(self, obj: LoanApplication) -> str:
        return format_minor(obj.requested_amount)

    @admin.display(description="max approved amount (₹)")
    def max_approved_amount_display(self, obj: LoanApplication) -> str:
        return format_minor(obj.max_approved_amount) if obj.max_approved_amount is not None else "—"

    def _decide(self, request: HttpRequest, queryset: QuerySet[LoanApplication], *, approve: bool) -> None:
        reason = (request.POST.get("reason") or "").strip()
        if not reason:
            self.message_user(request, "Enter a reason before approving or declining.", messages.ERROR)
            return
        actor = _actor(request)
        done, skipped = 0, []
        for application in queryset.order_by("pk"):
            if application.status != LoanStatus.MANUAL_REVIEW:
                skipped.append(str(application.pk))
                continue
            try:
                services.loan_application_decide_manually(
                    application=application, approve=approve, reason=reason, actor=actor
                )
            except ProblemError as exc:
                skipped.append(f"{application.pk} ({exc.detail})")
                continue
            done += 1
        verb = "Approved" if approve else "Declined"
        self.message_user(request, f"{verb} {done} application(s).")
        if skipped:
            self.message_user(
                request, "Skipped (not in manual review or changed meanwhile): " + ", ".join(skipped), messages.WARNING
            )

    @admin.action(description="Approve selected (manual review) — reason required", permissions=["decide"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet[LoanApplication]) -> None:
        self._decide(request, queryset, approve=True)

    @admin.action(description="Decline selected (manual review) — reason required", permissions=["decide"])
    def decline_selected(self, request: HttpRequest, queryset: QuerySet[LoanApplication]) -> None:
        self._decide(request, queryset, approve=False)


@admin.register(LoanDecision)
class LoanDecisionAdmin(admin.ModelAdmin):
    list_display = ("id", "application", "kind", "status", "rule_set_version", "decided_by", "created_at")
    list_filter = ("kind", "status", "rule_set_version")
    search_fields = ("=application__id",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in LoanDecision._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
