from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from apps.common.actors import Actor
from apps.common.admin import ReadOnlyAdmin, ReadOnlyTabularInline
from apps.common.forms import MoneyFormField, StrictEmailFormField
from apps.common.money import format_minor
from apps.employers.models import Coverage, CoverageChange, Employee, Employer, Policy
from apps.employers.services import EMPLOYER_MUTABLE_FIELDS, employer_update


class EmployerAdminForm(forms.ModelForm):  # type: ignore[type-arg]
    """Operators type the threshold in rupees (ADR 0014) and the contact e-mail by the API's rule (ADR 0015)."""

    low_balance_threshold = MoneyFormField(required=False, initial=0)
    contact_email = StrictEmailFormField(required=False)

    class Meta:
        model = Employer
        fields = (
            "partner",
            "name",
            "external_ref",
            "status",
            "low_balance_threshold",
            "velocity_limit_per_hour",
            "contact_email",
        )

    def clean_low_balance_threshold(self) -> int:
        value = self.cleaned_data.get("low_balance_threshold")
        return 0 if value is None else int(value)


@admin.register(Employer)
class EmployerAdmin(admin.ModelAdmin):
    form = EmployerAdminForm
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


@admin.register(Policy)
class PolicyAdmin(ReadOnlyAdmin):
    """Policies are created through the API (`policy_create`, audited); operators browse them here."""

    list_display = ("id", "policy_number", "employer", "insurer", "start_date", "end_date", "rate", "default_si")
    list_filter = ("insurer",)
    search_fields = ("policy_number", "employer__name", "employer__external_ref")
    list_select_related = ("employer", "insurer")

    @admin.display(description="rate ‰")
    def rate(self, obj: Policy) -> str:
        return f"{obj.premium_rate_per_mille}"

    @admin.display(description="default sum insured (₹)")
    def default_si(self, obj: Policy) -> str:
        return format_minor(obj.default_sum_insured)


@admin.register(Employee)
class EmployeeAdmin(ReadOnlyAdmin):
    """Members change only through endorsements; their personal fields are not listed (PII)."""

    list_display = ("id", "employee_code", "employer", "created_at", "updated_at")
    search_fields = ("=employee_code", "employer__name", "employer__external_ref")
    list_select_related = ("employer",)


class CoverageChangeInline(ReadOnlyTabularInline):
    model = CoverageChange
    fields = ("at", "action", "endorsement_id", "changed_by", "diff")
    readonly_fields = fields


@admin.register(Coverage)
class CoverageAdmin(ReadOnlyAdmin):
    """Cover as endorsements left it, with its field-level history (every start, end and update)."""

    list_display = ("id", "employee_code", "policy", "status", "sum_insured_inr", "start_date", "end_date")
    list_filter = ("status", "policy__insurer")
    search_fields = ("=employee__employee_code", "policy__policy_number")
    list_select_related = ("employee", "policy")
    inlines = (CoverageChangeInline,)

    @admin.display(description="employee", ordering="employee__employee_code")
    def employee_code(self, obj: Coverage) -> str:
        return obj.employee.employee_code

    @admin.display(description="sum insured (₹)")
    def sum_insured_inr(self, obj: Coverage) -> str:
        return format_minor(obj.sum_insured)
