"""Reconciliation API (SPEC §8, issue 12): validate → one service or selector → respond."""

from __future__ import annotations

from typing import Any

import django_filters
from django.db.models import Q, QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.common.errors import Conflict, DomainValidationError
from apps.common.filters import FilterSet, VisibleIdFilter
from apps.common.idempotency import idempotent
from apps.employers import selectors as employer_selectors
from apps.insurers.selectors import insurer_by_code
from apps.partners.api.base import PartnerGenericAPIView, actor_from_request, principal_of
from apps.partners.contracts import Scope
from apps.reconciliation import selectors, services
from apps.reconciliation.api.serializers import (
    DiscrepancyResolveInputSerializer,
    DiscrepancySerializer,
    ReconciliationCreateInputSerializer,
    ReconciliationRunSerializer,
)
from apps.reconciliation.contracts import ResolutionNotAllowedError, RunOverlapError
from apps.reconciliation.models import (
    Discrepancy,
    DiscrepancyKind,
    DiscrepancySeverity,
    DiscrepancyStatus,
    ReconciliationRun,
    RunStatus,
)
from apps.reconciliation.sources import RosterUnsupportedError, roster_source_for


class ReconciliationRunFilter(FilterSet):
    status = django_filters.ChoiceFilter(choices=RunStatus.choices)
    insurer = django_filters.CharFilter(field_name="insurer__code", max_length=40, help_text="insurer code")
    employer = VisibleIdFilter(
        method="filter_employer",
        visible_to=employer_selectors.employers_visible_to,
        noun="employer",
        help_text="runs covering this employer: started for it, or over all employers including it",
    )

    def filter_employer(self, queryset: QuerySet[ReconciliationRun], name: str, value: int) -> Any:
        """Runs started for the employer, and every all-employers run (the view keeps those whose
        `employer_ids` hold it: a JSON list, matched in Python so SQLite and PostgreSQL agree)."""
        return queryset.filter(Q(employer_id=value) | Q(employer__isnull=True))

    class Meta:
        model = ReconciliationRun
        fields = ("status", "insurer", "employer")


class ReconciliationCreateView(PartnerGenericAPIView):
    read_scope = Scope.RECONCILIATION_READ
    write_scope = Scope.RECONCILIATION_WRITE
    serializer_class = ReconciliationRunSerializer
    filterset_class = ReconciliationRunFilter

    def get_queryset(self) -> QuerySet[ReconciliationRun]:
        if getattr(self, "swagger_fake_view", False):
            return ReconciliationRun.objects.none()
        return selectors.runs_for(principal_of(self.request))

    @extend_schema(operation_id="reconciliations_list", responses=ReconciliationRunSerializer(many=True))
    def get(self, request: Request) -> Response:
        """The key's runs, newest first (cursor pages; filters `status`, `insurer`, `employer`)."""
        principal = principal_of(request)
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset())) or []
        visible = selectors.employer_ids_visible_to(principal)
        # Validated by the filter above (a bad value was a 422 there), so it parses.
        raw_employer = request.query_params.get("employer")
        wanted = int(raw_employer) if raw_employer else None
        runs = [
            run for run in page if set(run.employer_ids) <= visible and (wanted is None or wanted in run.employer_ids)
        ]
        return self.get_paginated_response(ReconciliationRunSerializer(runs, many=True).data)

    @extend_schema(
        request=ReconciliationCreateInputSerializer,
        responses={
            202: ReconciliationRunSerializer,
            409: OpenApiResponse(description="a run for this insurer and employer is in progress"),
        },
    )
    @idempotent
    def post(self, request: Request) -> Response:
        body = ReconciliationCreateInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        data = body.validated_data
        principal = principal_of(request)
        employer_id = data.get("employer")
        policy_id = data.get("policy")
        if employer_id is not None:
            employer_selectors.employer_get_for(principal, employer_id)  # 404 for a foreign employer
        elif policy_id is not None:
            raise DomainValidationError({"policy": "A policy needs its employer."})
        insurer = insurer_by_code(data["insurer"])
        if insurer is None:
            raise DomainValidationError({"insurer": "No such insurer."})
        try:
            roster_source_for(insurer)  # a protocol without a roster, or a broken configuration: 422 now
        except RosterUnsupportedError as exc:
            raise DomainValidationError({"insurer": str(exc)}) from exc
        if policy_id is not None:
            policy = employer_selectors.policy_with_employer_for(
                principal, employer_id=employer_id, policy_id=policy_id
            )
            if policy is None or policy.insurer_id != insurer.pk:
                raise DomainValidationError({"policy": "No such policy of this employer at this insurer."})
        employer_ids = selectors.scope_employer_ids_for_key(
            principal=principal, insurer_id=insurer.pk, employer_id=employer_id
        )
        if not employer_ids and employer_id is not None:
            raise DomainValidationError({"employer": "This employer has no policy at this insurer."})
        if not employer_ids:
            raise DomainValidationError({"insurer": "None of this key's employers has a policy at this insurer."})
        try:
            run = services.reconciliation_start(
                insurer_id=insurer.pk,
                employer_ids=employer_ids,
                employer_id=employer_id,
                policy_id=policy_id,
                partner_id=principal.partner_id,
                actor=actor_from_request(request),
            )
        except RunOverlapError as exc:
            holder = ReconciliationRun.objects.filter(pk=exc.running_run_id).first()
            if holder is not None and selectors.run_visible_to(principal, holder):
                raise Conflict(
                    f"Reconciliation run {holder.pk} is in progress for this scope.",
                    slug="reconciliation-in-progress",
                    extra={"running_id": holder.pk},
                ) from exc
            raise Conflict(
                "A reconciliation run is in progress for this scope.", slug="reconciliation-in-progress"
            ) from exc
        return Response(ReconciliationRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class ReconciliationDetailView(PartnerGenericAPIView):
    read_scope = Scope.RECONCILIATION_READ
    write_scope = Scope.RECONCILIATION_WRITE
    serializer_class = ReconciliationRunSerializer

    def get(self, request: Request, pk: int) -> Response:
        return Response(ReconciliationRunSerializer(selectors.run_get_for(principal_of(request), pk)).data)

    @extend_schema(
        request=None,
        responses={
            202: OpenApiResponse(
                response=ReconciliationRunSerializer,
                description="cancel asked: `RUNNING` with `cancel_requested_at` (a live worker stops at its next "
                "page), or already `CANCELLED` when the run had no live worker",
            ),
            409: OpenApiResponse(description="the run already ended (`reconciliation-ended`); nothing to cancel"),
        },
    )
    def delete(self, request: Request, pk: int) -> Response:
        """Cancel: the run stops at its next page and ends CANCELLED, keeping what it pulled. When its worker is
        gone (no heartbeat for `DEAD_WORKER_SECONDS`, ADR 0063) the run ends CANCELLED by this request: the 202
        body already shows `status: CANCELLED`. Repeating it while the run still runs is a 202 again; a run that
        already ended is a 409 naming its status."""
        run = selectors.run_get_for(principal_of(request), pk)
        if run.status != RunStatus.RUNNING:
            raise Conflict(
                f"Reconciliation run {run.pk} already ended ({run.status}): there is nothing to cancel.",
                slug="reconciliation-ended",
                extra={"run_status": run.status},
            )
        run = services.reconciliation_cancel(run=run, actor=actor_from_request(request))
        return Response(ReconciliationRunSerializer(run).data, status=status.HTTP_202_ACCEPTED)


class DiscrepancyFilter(FilterSet):
    kind = django_filters.ChoiceFilter(choices=DiscrepancyKind.choices)
    severity = django_filters.ChoiceFilter(choices=DiscrepancySeverity.choices)
    status = django_filters.ChoiceFilter(choices=DiscrepancyStatus.choices)

    class Meta:
        model = Discrepancy
        fields = ("kind", "severity", "status")


class ReconciliationDiscrepancyListView(PartnerGenericAPIView):
    read_scope = Scope.RECONCILIATION_READ
    serializer_class = DiscrepancySerializer
    filterset_class = DiscrepancyFilter

    def get_queryset(self) -> QuerySet[Discrepancy]:
        if getattr(self, "swagger_fake_view", False):
            return Discrepancy.objects.none()
        run = selectors.run_get_for(principal_of(self.request), self.kwargs["pk"])
        return Discrepancy.objects.filter(run=run)

    @extend_schema(operation_id="reconciliation_discrepancies_list", responses=DiscrepancySerializer(many=True))
    def get(self, request: Request, pk: int) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(DiscrepancySerializer(page, many=True).data)


class DiscrepancyDetailView(PartnerGenericAPIView):
    read_scope = Scope.RECONCILIATION_READ
    serializer_class = DiscrepancySerializer

    def get(self, request: Request, pk: int) -> Response:
        return Response(DiscrepancySerializer(selectors.discrepancy_get_for(principal_of(request), pk)).data)


class DiscrepancyResolveView(PartnerGenericAPIView):
    write_scope = Scope.RECONCILIATION_WRITE
    serializer_class = DiscrepancySerializer

    @extend_schema(
        request=DiscrepancyResolveInputSerializer,
        responses={
            200: DiscrepancySerializer,
            409: OpenApiResponse(
                description="a duplicate endorsement (create_*), or already resolved with another action "
                "(`discrepancy-already-resolved`, naming it)"
            ),
        },
    )
    @idempotent  # a `create_*` action creates an endorsement: SPEC §2's creating POST (newcomer trial)
    def post(self, request: Request, pk: int) -> Response:
        """Resolve once; the same action again returns the first resolution unchanged (a safe retry), another
        action on a resolved discrepancy is 409 `discrepancy-already-resolved`."""
        discrepancy = selectors.discrepancy_get_for(principal_of(request), pk)
        body = DiscrepancyResolveInputSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            discrepancy = services.discrepancy_resolve(
                discrepancy_id=discrepancy.pk,
                action=body.validated_data["action"],
                note=body.validated_data["note"],
                gender=body.validated_data.get("gender", ""),
                actor=actor_from_request(request),
            )
        except ResolutionNotAllowedError as exc:
            raise DomainValidationError({"action": str(exc)}) from exc
        return Response(DiscrepancySerializer(discrepancy).data)
