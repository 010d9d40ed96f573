"""Ledger API (SPEC §6): balance, top-ups, entries. Tenancy: an employer this key may not act for is 404."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.common.errors import Conflict, DomainValidationError
from apps.common.idempotency import idempotent
from apps.employers.selectors import employer_get_for
from apps.ledger import selectors, services
from apps.ledger.api.serializers import (
    LedgerBalanceSerializer,
    LedgerEmployerQuerySerializer,
    LedgerEntriesQuerySerializer,
    LedgerEntrySerializer,
    LedgerTopupInputSerializer,
    LedgerTransactionSerializer,
)
from apps.ledger.models import LedgerEntry
from apps.partners.api.base import PartnerGenericAPIView, actor_from_request, principal_of
from apps.partners.contracts import Scope

EMPLOYER_PARAM = OpenApiParameter(
    "employer", OpenApiTypes.INT, OpenApiParameter.QUERY, required=True, description="employer id"
)


class LedgerBalanceView(PartnerGenericAPIView):
    read_scope = Scope.LEDGER_READ
    serializer_class = LedgerBalanceSerializer
    pagination_class = None

    @extend_schema(operation_id="ledger_balance", parameters=[EMPLOYER_PARAM], responses=LedgerBalanceSerializer)
    def get(self, request: Request) -> Response:
        query = LedgerEmployerQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        employer = employer_get_for(principal_of(request), query.validated_data["employer"])
        return Response(LedgerBalanceSerializer(selectors.balance_get(employer_id=employer.pk)).data)


class LedgerTopupView(PartnerGenericAPIView):
    write_scope = Scope.LEDGER_WRITE
    serializer_class = LedgerTransactionSerializer

    @extend_schema(
        operation_id="ledger_topup_create",
        request=LedgerTopupInputSerializer,
        responses={201: LedgerTransactionSerializer},
        description="Credit the employer's endorsement account. Idempotent by `reference`: repeating a reference "
        "with the same employer and amount answers 201 with the original transaction and changes nothing; "
        "with a different employer or amount it is 409. `Idempotency-Key` is honoured as well.",
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = LedgerTopupInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        employer = employer_get_for(principal_of(request), values["employer"])
        try:
            txn = services.topup_post(
                employer_id=employer.pk,
                amount=values["amount"],
                reference=values["reference"],
                actor=actor_from_request(request),
            )
        except services.ReferenceConflict as exc:
            raise Conflict(str(exc), slug="ledger-reference-conflict")
        except services.InvalidLedgerRequest as exc:
            raise DomainValidationError({"": str(exc)})
        return Response(LedgerTransactionSerializer(txn).data, status=status.HTTP_201_CREATED)


class LedgerEntriesView(PartnerGenericAPIView):
    read_scope = Scope.LEDGER_READ
    serializer_class = LedgerEntrySerializer

    def get_queryset(self) -> QuerySet[LedgerEntry]:
        return LedgerEntry.objects.none()  # schema generation only; `get` builds the real one

    @extend_schema(
        operation_id="ledger_entries_list",
        parameters=[
            EMPLOYER_PARAM,
            OpenApiParameter("since", OpenApiTypes.DATETIME, OpenApiParameter.QUERY, description="created at or after"),
            OpenApiParameter("until", OpenApiTypes.DATETIME, OpenApiParameter.QUERY, description="created before"),
        ],
        responses=LedgerEntrySerializer(many=True),
    )
    def get(self, request: Request, *args: Any) -> Response:
        query = LedgerEntriesQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        values = query.validated_data
        employer = employer_get_for(principal_of(request), values["employer"])
        entries = selectors.entries_for_employer(
            employer_id=employer.pk, since=values.get("since"), until=values.get("until")
        )
        page = self.paginate_queryset(entries)
        return self.get_paginated_response(LedgerEntrySerializer(page, many=True).data)
