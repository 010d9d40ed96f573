from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import django_filters
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from apps.common.errors import DomainValidationError
from apps.common.filters import FilterSet, VisibleIdFilter
from apps.common.idempotency import idempotent
from apps.common.parsers import GuardedJSONParser
from apps.employers import selectors as employer_selectors
from apps.endorsements import selectors, services
from apps.endorsements.api.serializers import (
    EndorsementBatchCsvInputSerializer,
    EndorsementBatchJsonInputSerializer,
    EndorsementBatchListItemSerializer,
    EndorsementBatchProgressSerializer,
    EndorsementBatchSerializer,
    EndorsementCreateInputSerializer,
    EndorsementDetailSerializer,
    EndorsementQuoteSerializer,
    EndorsementSerializer,
    endorsement_detail_representation,
    progress_payload,
)
from apps.endorsements.models import Endorsement, EndorsementBatch, EndorsementStatus, EndorsementType
from apps.endorsements.parsing import (
    COMPOUND_MEMBERS,
    MAX_ROWS,
    ParseErrors,
    csv_field_name,
    draft_from_csv_row,
    draft_from_request,
    parse_id,
    read_csv,
    unknown_fields,
)
from apps.endorsements.pricing import format_exact_rupees
from apps.endorsements.validation import EndorsementDraft
from apps.partners.api.base import PartnerGenericAPIView, actor_from_request, principal_of
from apps.partners.contracts import Scope

if TYPE_CHECKING:
    from apps.employers.models import Employer, Policy

ID_MESSAGE = "A positive integer id (at most 9223372036854775807) is required."

# A batch body's keys (JSON: `rows`; multipart: the CSV `file`); any other is 422 naming it (newcomer trial).
BATCH_FIELDS = frozenset({"employer", "policy", "rows", "file"})
FILE_MESSAGE = "Must be a CSV file, sent as a file part of a multipart/form-data body."


def resolve_employer_policy(request: Request, body: Mapping[str, Any]) -> tuple[Employer, Policy]:
    """The employer must be one this key acts for (404 otherwise); the policy must be the employer's (422).

    Ids that are not integers in the bigint range (`parsing.parse_id`) are 422 on their field (issue 8, kind 1)."""
    employer_id = parse_id(body.get("employer"))
    policy_id = parse_id(body.get("policy"))
    errors = {name: ID_MESSAGE for name, value in (("employer", employer_id), ("policy", policy_id)) if value is None}
    if errors:
        raise DomainValidationError(errors)
    assert employer_id is not None
    assert policy_id is not None
    principal = principal_of(request)
    policy = employer_selectors.policy_with_employer_for(principal, employer_id=employer_id, policy_id=policy_id)
    if policy is not None:
        return policy.employer, policy
    employer_selectors.employer_get_for(principal, employer_id)  # 404 if the employer is not this key's
    raise DomainValidationError({"policy": "No such policy for this employer."})


def parse_single(body: Any) -> EndorsementDraft:
    if not isinstance(body, Mapping):
        raise DomainValidationError({"": "The body must be a JSON object."})
    try:
        return draft_from_request(body)
    except ParseErrors as exc:
        raise DomainValidationError(_group(exc.errors))


def _group(errors: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for field, detail in errors:
        grouped.setdefault(field, []).append(detail)
    return grouped


class EndorsementFilter(FilterSet):
    employer = VisibleIdFilter(
        field_name="employer_id", visible_to=employer_selectors.employers_visible_to, noun="employer"
    )
    status = django_filters.ChoiceFilter(choices=EndorsementStatus.choices)
    type = django_filters.ChoiceFilter(choices=EndorsementType.choices)
    employee_code = django_filters.CharFilter()
    batch = VisibleIdFilter(field_name="batch_id", visible_to=selectors.batches_visible_to, noun="batch")
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")

    class Meta:
        model = Endorsement
        fields = ("employer", "status", "type", "employee_code", "batch", "created_after")


class EndorsementListCreateView(PartnerGenericAPIView):
    read_scope = Scope.ENDORSEMENTS_READ
    write_scope = Scope.ENDORSEMENTS_WRITE
    serializer_class = EndorsementSerializer
    filterset_class = EndorsementFilter

    def get_queryset(self) -> QuerySet[Endorsement]:
        return selectors.endorsements_visible_to(principal_of(self.request))

    @extend_schema(operation_id="endorsements_list", responses=EndorsementSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(EndorsementSerializer(page, many=True).data)

    @extend_schema(
        request=EndorsementCreateInputSerializer,
        responses={202: EndorsementSerializer, 409: OpenApiResponse(description="duplicate within 24 h")},
    )
    @idempotent
    def post(self, request: Request) -> Response:
        draft = parse_single(request.data)
        employer, policy = resolve_employer_policy(request, request.data)
        endorsement = services.endorsement_submit(
            employer=employer,
            policy=policy,
            draft=draft,
            partner_id=principal_of(request).partner_id,
            actor=actor_from_request(request),
        )
        return Response(EndorsementSerializer(endorsement).data, status=status.HTTP_202_ACCEPTED)


class EndorsementDetailView(PartnerGenericAPIView):
    read_scope = Scope.ENDORSEMENTS_READ
    serializer_class = EndorsementDetailSerializer

    def get(self, request: Request, pk: int) -> Response:
        endorsement, history = selectors.endorsement_detail_for(principal_of(request), pk)
        return Response(endorsement_detail_representation(endorsement, history))


class EndorsementCancelView(PartnerGenericAPIView):
    write_scope = Scope.ENDORSEMENTS_WRITE
    serializer_class = EndorsementSerializer

    @extend_schema(
        request=None, responses={200: EndorsementSerializer, 409: OpenApiResponse(description="already sent")}
    )
    def post(self, request: Request, pk: int) -> Response:
        endorsement = selectors.endorsement_get_for(principal_of(request), pk)
        endorsement = services.endorsement_cancel(endorsement=endorsement, actor=actor_from_request(request))
        return Response(EndorsementSerializer(endorsement).data)


class EndorsementQuoteView(PartnerGenericAPIView):
    # A quote changes nothing, but it is priced for a write: the key needs the write scope.
    write_scope = Scope.ENDORSEMENTS_WRITE
    serializer_class = EndorsementQuoteSerializer

    @extend_schema(request=EndorsementCreateInputSerializer, responses=EndorsementQuoteSerializer)
    def post(self, request: Request) -> Response:
        draft = parse_single(request.data)
        employer, policy = resolve_employer_policy(request, request.data)
        priced = services.endorsement_quote(employer=employer, policy=policy, draft=draft)
        q = priced.quote
        return Response(
            EndorsementQuoteSerializer(
                {
                    "premium_amount": q.premium_amount,
                    "premium_direction": q.premium_direction,
                    "annual_premium": format_exact_rupees(q.annual_premium_exact),
                    "annual_premium_before": (
                        None if (before := q.annual_premium_before_exact) is None else format_exact_rupees(before)
                    ),
                    "remaining_days": q.remaining_days,
                    "term_days": q.term_days,
                }
            ).data
        )


class EndorsementBatchFilter(FilterSet):
    """`GET /endorsement-batches` filters: employer, status (processing | completed | cancelled), policy,
    source, and the upload time (`created_after` ≤ created_at < `created_before`)."""

    employer = VisibleIdFilter(
        field_name="employer_id", visible_to=employer_selectors.employers_visible_to, noun="employer"
    )
    policy = VisibleIdFilter(field_name="policy_id", visible_to=employer_selectors.policies_visible_to, noun="policy")
    source = django_filters.ChoiceFilter(choices=[("csv", "csv"), ("json", "json")])
    status = django_filters.ChoiceFilter(
        choices=[("processing", "processing"), ("completed", "completed"), ("cancelled", "cancelled")],
        method="filter_status",
    )
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")

    class Meta:
        model = EndorsementBatch
        fields = ("employer", "policy", "source", "status", "created_after", "created_before")

    def filter_status(self, queryset: QuerySet[EndorsementBatch], name: str, value: str) -> QuerySet[EndorsementBatch]:
        if value == "cancelled":
            return queryset.filter(cancelled_at__isnull=False)
        if value == "completed":
            return queryset.filter(cancelled_at__isnull=True, completed_at__isnull=False)
        return queryset.filter(cancelled_at__isnull=True, completed_at__isnull=True)


class EndorsementBatchCreateView(PartnerGenericAPIView):
    read_scope = Scope.ENDORSEMENTS_READ
    write_scope = Scope.ENDORSEMENTS_WRITE
    serializer_class = EndorsementBatchSerializer
    parser_classes = [GuardedJSONParser, MultiPartParser]
    filterset_class = EndorsementBatchFilter

    def get_queryset(self) -> QuerySet[EndorsementBatch]:
        return selectors.batches_visible_to(principal_of(self.request))

    @extend_schema(operation_id="endorsement_batches_list", responses=EndorsementBatchListItemSerializer(many=True))
    def get(self, request: Request) -> Response:
        """The batches of the employers this key may act for, newest first, with filters."""
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        return self.get_paginated_response(EndorsementBatchListItemSerializer(page, many=True).data)

    @extend_schema(
        request={
            "application/json": EndorsementBatchJsonInputSerializer,
            "multipart/form-data": EndorsementBatchCsvInputSerializer,
        },
        responses={202: EndorsementBatchSerializer},
    )
    @idempotent
    def post(self, request: Request) -> Response:
        body = request.data
        if not isinstance(body, Mapping):
            raise DomainValidationError({"": "The body must be a JSON object or a multipart form."})
        unknown = unknown_fields(body, BATCH_FIELDS)
        if unknown:
            raise DomainValidationError(dict(unknown))
        employer, policy = resolve_employer_policy(request, body)
        upload = request.FILES.get("file") if hasattr(request, "FILES") else None
        if upload is None and body.get("file") not in (None, ""):  # a JSON value or a form field, not a file part
            raise DomainValidationError({"file": FILE_MESSAGE})
        if upload is not None:
            drafts, row_errors, lines = _parse_csv(upload.read())
            source = "csv"
        else:
            drafts, row_errors = _parse_json_rows(body.get("rows"))
            lines = None
            source = "json"
        batch = services.endorsement_batch_create(
            employer=employer,
            policy=policy,
            drafts=drafts,
            parse_errors=row_errors,
            source=source,
            partner_id=principal_of(request).partner_id,
            actor=actor_from_request(request),
            lines=lines,
        )
        return Response(EndorsementBatchSerializer(batch).data, status=status.HTTP_202_ACCEPTED)


def _parse_csv(content: bytes) -> tuple[list[EndorsementDraft | None], list[services.RowError], list[int]]:
    """An uploaded CSV → a draft (or None) per data row, the row errors (named by column, row and line), and
    each row's first line. A fault of the whole file is 422 on `file`."""
    try:
        rows = read_csv(content)
    except ParseErrors as exc:
        raise DomainValidationError(_group(exc.errors))
    drafts: list[EndorsementDraft | None] = []
    errors: list[services.RowError] = []
    for row in rows:
        problems = row.errors
        if not problems:
            try:
                drafts.append(draft_from_csv_row(row.cells))
                continue
            except ParseErrors as exc:
                problems = exc.errors
        drafts.append(None)
        errors += [services.RowError(row.row, csv_field_name(f), d, row.line) for f, d in problems]
    return drafts, errors, [row.line for row in rows]


def _parse_json_rows(rows: Any) -> tuple[list[EndorsementDraft | None], list[services.RowError]]:
    """JSON batch rows → a draft (or None) per row and the row errors, named by their path in the row."""
    if rows is not None and not isinstance(rows, list):
        raise DomainValidationError({"rows": COMPOUND_MEMBERS["rows"][1]})
    if not rows:
        raise DomainValidationError({"rows": "A non-empty list of rows (or a CSV `file`) is required."})
    if len(rows) > MAX_ROWS:
        raise DomainValidationError({"rows": f"At most {MAX_ROWS} rows per batch."})
    drafts: list[EndorsementDraft | None] = []
    errors: list[services.RowError] = []
    for number, row in enumerate(rows, start=1):
        try:
            if not isinstance(row, Mapping):
                raise ParseErrors([("row", COMPOUND_MEMBERS["row"][1])])
            drafts.append(draft_from_request(row, envelope=frozenset()))
        except ParseErrors as exc:
            drafts.append(None)
            errors += [services.RowError(number, f, d) for f, d in exc.errors]
    return drafts, errors


class EndorsementBatchDetailView(PartnerGenericAPIView):
    read_scope = Scope.ENDORSEMENTS_READ
    write_scope = Scope.ENDORSEMENTS_WRITE
    serializer_class = EndorsementBatchProgressSerializer

    def get(self, request: Request, pk: int) -> Response:
        batch = selectors.batch_get_for(principal_of(request), pk)
        return Response(progress_payload(batch, selectors.batch_progress(batch)))

    @extend_schema(responses={200: EndorsementBatchProgressSerializer})
    def delete(self, request: Request, pk: int) -> Response:
        batch = selectors.batch_get_for(principal_of(request), pk)
        services.endorsement_batch_cancel(batch=batch, actor=actor_from_request(request))
        batch.refresh_from_db()
        return Response(progress_payload(batch, selectors.batch_progress(batch)))
