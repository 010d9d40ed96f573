"""Operators' view of reconciliation (issue 12): runs and discrepancies, filterable; cancel and resolve go
through the same services as the API."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.common.actors import Actor
from apps.common.admin import ReadOnlyAdmin
from apps.common.errors import Conflict, DomainValidationError
from apps.reconciliation.contracts import ResolutionAction, ResolutionNotAllowedError
from apps.reconciliation.models import Discrepancy, InsurerRosterChange, ReconciliationRun
from apps.reconciliation.services import discrepancy_resolve, reconciliation_cancel


def _operator(request: HttpRequest) -> Actor:
    return Actor.operator(
        user_id=request.user.pk, username=request.user.get_username(), ip=request.META.get("REMOTE_ADDR")
    )


class ResumedFilter(admin.SimpleListFilter):
    """Runs the abandoned-run sweep queued again after their worker stopped (ADR 0061)."""

    title = "resumed after a worker stopped"
    parameter_name = "resumed"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "yes"), ("no", "no")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[ReconciliationRun]) -> QuerySet[ReconciliationRun]:
        if self.value() == "yes":
            return queryset.filter(resumes__gt=0)
        if self.value() == "no":
            return queryset.filter(resumes=0)
        return queryset


@admin.register(ReconciliationRun)
class ReconciliationRunAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "insurer",
        "employer",
        "policy",
        "status",
        "pages_pulled",
        "rows_pulled",
        "rows_matched",
        "resumes",
        "requested_by",
        "created_at",
        "finished_at",
    )
    list_filter = ("status", "insurer", ResumedFilter)
    search_fields = ("=id", "=employer__id", "requested_by")
    date_hierarchy = "created_at"
    actions = ("cancel_runs",)

    @admin.action(
        description="Cancel (the run stops at its next page, or now if its worker is gone; keeps what it pulled)"
    )
    def cancel_runs(self, request: HttpRequest, queryset: QuerySet[ReconciliationRun]) -> None:
        actor = _operator(request)
        for run in queryset.order_by("id"):
            reconciliation_cancel(run=run, actor=actor)
        self.message_user(request, f"Cancel requested for {queryset.count()} run(s).")


class ResendPendingFilter(admin.SimpleListFilter):
    """Resends the insurer answered `pending` (a callback or file insurer answering later): the next run's roster
    shows whether it applied them. A resend moves no money (ADR 0057), so nothing waits on the answer."""

    title = "resend answer"
    parameter_name = "resend_outcome"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("pending", "pending")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Discrepancy]) -> QuerySet[Discrepancy]:
        if self.value() == "pending":
            return queryset.filter(resolution_result__resend_outcome="pending")
        return queryset


@admin.register(Discrepancy)
class DiscrepancyAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "run",
        "employer",
        "policy",
        "kind",
        "field",
        "severity",
        "employee_code",
        "endorsement_id",
        "keel_value",
        "insurer_value",
        "status",
        "resolution_action",
    )
    list_filter = ("status", "kind", "severity", "run__insurer", ResendPendingFilter)
    search_fields = ("=run__id", "employee_code", "=endorsement_id")
    date_hierarchy = "created_at"
    actions = (
        "ignore",
        "flag_for_finance",
        "resend",
        "create_deletion",
        "create_correction",
        "request_insurer_deletion",
    )

    def _resolve(self, request: HttpRequest, queryset: QuerySet[Discrepancy], action: str) -> None:
        actor = _operator(request)
        done, refused = 0, []
        for discrepancy in queryset.order_by("id"):
            try:
                discrepancy_resolve(discrepancy_id=discrepancy.pk, action=action, note="admin", actor=actor)
                done += 1
            except ResolutionNotAllowedError as exc:
                refused.append(f"{discrepancy.pk}: {exc}")
            except (DomainValidationError, Conflict) as exc:
                refused.append(f"{discrepancy.pk}: {getattr(exc, 'errors', None) or exc.detail}")
        self.message_user(request, f"{action}: {done} discrepancy(ies).")
        if refused:
            self.message_user(request, "Refused — " + "; ".join(refused[:20]), level=messages.WARNING)

    @admin.action(description="Ignore")
    def ignore(self, request: HttpRequest, queryset: QuerySet[Discrepancy]) -> None:
        self._resolve(request, queryset, ResolutionAction.IGNORE)

    @admin.action(description="Flag for finance (money kinds)")
    def flag_for_finance(self, request: HttpRequest, queryset: QuerySet[Discrepancy]) -> None:
        self._resolve(request, queryset, ResolutionAction.FLAG_FOR_FINANCE)

    @admin.action(description="Resend Keel's member to the insurer (missing at insurer, field mismatch)")
    def resend(self, request: HttpRequest, queryset: QuerySet[Discrepancy]) -> None:
        self._resolve(request, queryset, ResolutionAction.RESEND)

    @admin.action(description="End the cover in Keel through a deletion (missing at insurer)")
    def create_deletion(self, request: HttpRequest, queryset: QuerySet[Discrepancy]) -> None:
        self._resolve(request, queryset, ResolutionAction.CREATE_DELETION)

    @admin.action(description="Take the insurer's value through a correction (field mismatch)")
    def create_correction(self, request: HttpRequest, queryset: QuerySet[Discrepancy]) -> None:
        self._resolve(request, queryset, ResolutionAction.CREATE_CORRECTION)

    @admin.action(description="Ask the insurer to delete its member (missing internally)")
    def request_insurer_deletion(self, request: HttpRequest, queryset: QuerySet[Discrepancy]) -> None:
        self._resolve(request, queryset, ResolutionAction.REQUEST_INSURER_DELETION)


@admin.register(InsurerRosterChange)
class InsurerRosterChangeAdmin(ReadOnlyAdmin):
    """When the insurer's record of a member changed, and which run saw it."""

    list_display = ("id", "entry", "run", "previous", "new", "changed_at")
    list_filter = ("entry__insurer",)
    search_fields = ("entry__employee_code",)
    date_hierarchy = "changed_at"
