"""Read-only money views for operators, and an operator top-up form that calls `topup_post` (audited).

Nothing here calls `.save()` on money: the only write is the top-up service."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html

from apps.common.actors import Actor
from apps.common.admin import ReadOnlyAdmin, ReadOnlyStackedInline
from apps.common.forms import MoneyFormField
from apps.common.money import format_minor
from apps.common.text import ControlCharacterValidator
from apps.ledger.models import AccountKind, Hold, HoldResolution, LedgerAccount, LedgerEntry, LedgerTransaction
from apps.ledger.services import LedgerError, topup_post


def _rupees(minor: int | None) -> str:
    return "" if minor is None else format_minor(minor)


class OperatorTopupForm(forms.Form):
    amount = MoneyFormField(min_minor=1)
    reference = forms.CharField(
        max_length=200,
        validators=[ControlCharacterValidator()],
        help_text="Bank reference; repeating it changes nothing.",
    )


@admin.register(LedgerAccount)
class LedgerAccountAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "employer", "posted_display", "held_display", "available_display", "low_balance")
    list_filter = ("kind", "low_balance")
    search_fields = ("employer__name", "employer__external_ref")
    list_select_related = ("employer",)
    readonly_fields = ("topup_link",)

    @admin.display(description="posted")
    def posted_display(self, obj: LedgerAccount) -> str:
        return _rupees(obj.posted)

    @admin.display(description="held")
    def held_display(self, obj: LedgerAccount) -> str:
        return _rupees(obj.held)

    @admin.display(description="available")
    def available_display(self, obj: LedgerAccount) -> str:
        return _rupees(obj.available)

    @admin.display(description="operator top-up")
    def topup_link(self, obj: LedgerAccount) -> str:
        if obj.kind != AccountKind.EMPLOYER:
            return "—"
        return format_html('<a href="{}">Top up this account</a>', reverse("admin:ledger_account_topup", args=[obj.pk]))

    def get_urls(self) -> list[URLPattern]:  # type: ignore[override]
        own = [
            path(
                "<int:pk>/topup/",
                self.admin_site.admin_view(self.topup_view),
                name="ledger_account_topup",
            )
        ]
        return own + super().get_urls()  # type: ignore[operator]

    def topup_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        if not request.user.has_perm("ledger.topup_ledgeraccount"):
            raise PermissionDenied
        account = get_object_or_404(LedgerAccount, pk=pk, kind=AccountKind.EMPLOYER)
        form = OperatorTopupForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            actor = Actor.operator(
                user_id=request.user.pk, username=request.user.get_username(), ip=request.META.get("REMOTE_ADDR")
            )
            assert account.employer_id is not None
            try:
                txn = topup_post(
                    employer_id=account.employer_id,
                    amount=form.cleaned_data["amount"],
                    reference=form.cleaned_data["reference"],
                    actor=actor,
                )
            except LedgerError as exc:
                form.add_error(None, str(exc))
            else:
                self.message_user(
                    request,
                    f"Top-up {txn.reference}: INR {format_minor(txn.amount)} (transaction {txn.pk}).",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(reverse("admin:ledger_ledgeraccount_change", args=[account.pk]))
        context = {
            **self.admin_site.each_context(request),
            "title": f"Top up {account}",
            "account": account,
            "form": form,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/ledger/topup.html", context)


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = ("id", "kind", "reference", "employer", "amount_display", "endorsement_id", "created_at")
    list_filter = ("kind", "created_at")
    search_fields = ("reference", "employer__name", "=endorsement_id")
    list_select_related = ("employer",)
    date_hierarchy = "created_at"

    @admin.display(description="amount")
    def amount_display(self, obj: LedgerTransaction) -> str:
        return _rupees(obj.amount)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "transaction",
        "account",
        "direction",
        "amount_display",
        "balance_after_display",
        "created_at",
    )
    list_filter = ("direction", "account__kind", "transaction__kind")
    search_fields = ("transaction__reference",)
    list_select_related = ("transaction", "account")

    @admin.display(description="amount")
    def amount_display(self, obj: LedgerEntry) -> str:
        return _rupees(obj.amount)

    @admin.display(description="balance after")
    def balance_after_display(self, obj: LedgerEntry) -> str:
        return _rupees(obj.balance_after)


class HoldResolutionInline(ReadOnlyStackedInline):
    model = HoldResolution


class HoldStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("open", "open"), ("captured", "captured"), ("released", "released")]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        value = self.value()
        if value == "open":
            return queryset.filter(resolution__isnull=True)
        if value in ("captured", "released"):
            return queryset.filter(resolution__kind=value)
        return queryset


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = ("id", "reference", "account", "amount_display", "endorsement_id", "state", "created_at")
    list_filter = (HoldStateFilter, "created_at")
    search_fields = ("reference", "=endorsement_id")
    list_select_related = ("account", "resolution")
    inlines = (HoldResolutionInline,)

    @admin.display(description="amount")
    def amount_display(self, obj: Hold) -> str:
        return _rupees(obj.amount)

    @admin.display(description="state")
    def state(self, obj: Hold) -> str:
        try:
            return str(obj.resolution.kind)
        except HoldResolution.DoesNotExist:
            return "open"
