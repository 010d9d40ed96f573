"""`/api/v1/webhook-endpoints` and `/api/v1/events` (SPEC §10): validate → one service/selector → respond."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import django_filters
from django.conf import settings
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from apps.common.errors import ProblemError
from apps.common.filters import FilterSet, IdFilter
from apps.common.idempotency import idempotent, shown_once
from apps.common.pagination import CursorPagination
from apps.common.serializers import ModelSerializer, Serializer
from apps.partners.api.base import PartnerGenericAPIView, actor_from_request, principal_of
from apps.partners.contracts import Scope
from apps.partners.webhooks import selectors, services
from apps.partners.webhooks.contracts import EventObjectType, EventType
from apps.partners.webhooks.dispatch import event_payload
from apps.partners.webhooks.models import Event, WebhookAttempt, WebhookEndpoint

_422 = OpenApiResponse(description="Validation failed (problem+json with per-field `errors`).")


class WebhookEndpointCreateInputSerializer(Serializer):
    url = serializers.CharField(max_length=2000, help_text="https URL; no private, loopback or metadata addresses.")
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=EventType.choices), min_length=1, max_length=len(EventType.values)
    )
    description = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")


class WebhookEndpointUpdateInputSerializer(Serializer):
    url = serializers.CharField(max_length=2000, required=False)
    event_types = serializers.ListField(
        child=serializers.ChoiceField(choices=EventType.choices),
        min_length=1,
        max_length=len(EventType.values),
        required=False,
    )
    description = serializers.CharField(max_length=500, required=False, allow_blank=True)
    is_active = serializers.BooleanField(required=False, help_text="false disables, true re-enables (new events only).")


class WebhookEndpointSerializer(ModelSerializer):
    employers = serializers.ListField(
        source="employer_ids", child=serializers.IntegerField(), allow_null=True, read_only=True
    )
    event_types = serializers.ListField(child=serializers.CharField(), read_only=True)

    class Meta:
        model = WebhookEndpoint
        fields: tuple[str, ...] = (
            "id",
            "url",
            "description",
            "event_types",
            "employers",
            "is_active",
            "disabled_at",
            "disabled_reason",
            "created_at",
            "updated_at",
        )
        read_only_fields: tuple[str, ...] = fields


class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    secret = serializers.SerializerMethodField(
        help_text="`whsec_…` signing secret, shown only in this response; `null` when the response is an "
        "Idempotency-Key replay (the secret is never stored in clear: rotate it if the first response was lost)."
    )

    class Meta(WebhookEndpointSerializer.Meta):
        fields = (*WebhookEndpointSerializer.Meta.fields, "secret")
        read_only_fields: tuple[str, ...] = fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_secret(self, obj: WebhookEndpoint) -> str | None:
        return str(self.context["secret"])


class WebhookSecretRotatedSerializer(Serializer):
    secret = serializers.CharField(help_text="The new `whsec_…` secret, shown once.")
    previous_secrets_expire_at = serializers.DateTimeField()


class WebhookAttemptSerializer(ModelSerializer):
    event = serializers.CharField(source="event_public_id")

    class Meta:
        model = WebhookAttempt
        fields = (
            "id",
            "event",
            "event_type",
            "attempt",
            "at",
            "status_code",
            "latency_ms",
            "succeeded",
            "response_excerpt",
            "error",
        )
        read_only_fields = fields


class EventSerializer(Serializer):
    id = serializers.CharField()
    type = serializers.CharField()
    timestamp = serializers.DateTimeField()
    position = serializers.IntegerField(help_text="Commit order: resume with `after=<position>`.")
    sequence = serializers.IntegerField(help_text="1, 2, … per object, in the order the changes happened.")
    object = inline_serializer(
        name="EventObject", fields={"type": serializers.CharField(), "id": serializers.CharField()}
    )
    employer = serializers.IntegerField(allow_null=True)
    data = serializers.DictField()  # type: ignore[assignment]  # a field named like Serializer.data (DRF pops it)

    def to_representation(self, instance: Event) -> dict[str, Any]:
        return event_payload(instance)


class PositionPagination(CursorPagination):
    ordering = "position"


class EventFilter(FilterSet):
    type = django_filters.MultipleChoiceFilter(choices=EventType.choices)
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    object_id = django_filters.CharFilter(field_name="object_id", max_length=64)
    object_type = django_filters.ChoiceFilter(field_name="object_type", choices=EventObjectType.choices)
    employer = IdFilter(field_name="employer_id")
    # A position is an integer ≥ 0 (0 = from the start); `1.5` or `1e3` is 422, not a decimal comparison.
    after = IdFilter(field_name="position", lookup_expr="gt", min_value=0, label="Events after this position.")

    class Meta:
        model = Event
        fields = ("type", "created_after", "object_id", "object_type", "employer", "after")


class WebhookEndpointFilter(FilterSet):
    is_active = django_filters.BooleanFilter(help_text="true: endpoints receiving events; false: disabled ones.")

    class Meta:
        model = WebhookEndpoint
        fields = ("is_active",)


class WebhookAttemptFilter(FilterSet):
    succeeded = django_filters.BooleanFilter(help_text="true: 2xx deliveries; false: failed attempts.")

    class Meta:
        model = WebhookAttempt
        fields = ("succeeded",)


class WebhookEndpointListCreateView(PartnerGenericAPIView):
    read_scope = Scope.WEBHOOKS_READ
    write_scope = Scope.WEBHOOKS_WRITE
    serializer_class = WebhookEndpointSerializer
    filterset_class = WebhookEndpointFilter

    def get_queryset(self) -> QuerySet[WebhookEndpoint]:
        if getattr(self, "swagger_fake_view", False):
            return WebhookEndpoint.objects.none()
        return selectors.webhook_endpoints_visible_to(principal_of(self.request))

    @extend_schema(operation_id="webhook_endpoints_list", responses=WebhookEndpointSerializer(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset())) or []
        return self.get_paginated_response(WebhookEndpointSerializer(page, many=True).data)

    @extend_schema(
        operation_id="webhook_endpoints_create",
        request=WebhookEndpointCreateInputSerializer,
        responses={201: WebhookEndpointCreatedSerializer, 422: _422},
    )
    @idempotent
    def post(self, request: Request) -> Response:
        data = WebhookEndpointCreateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint, secret = services.webhook_endpoint_create(
            principal=principal_of(request), actor=actor_from_request(request), **data.validated_data
        )
        body = WebhookEndpointCreatedSerializer(endpoint, context={"secret": secret}).data
        # Shown once: an Idempotency-Key replay answers the endpoint with `secret: null` (never stored in clear).
        return shown_once(Response(body, status=status.HTTP_201_CREATED), "secret")


class WebhookEndpointDetailView(PartnerGenericAPIView):
    read_scope = Scope.WEBHOOKS_READ
    write_scope = Scope.WEBHOOKS_WRITE
    serializer_class = WebhookEndpointSerializer

    @extend_schema(operation_id="webhook_endpoints_retrieve", responses=WebhookEndpointSerializer)
    def get(self, request: Request, pk: int) -> Response:
        endpoint = selectors.webhook_endpoint_get_for(principal_of(request), pk)
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(
        operation_id="webhook_endpoints_partial_update",
        request=WebhookEndpointUpdateInputSerializer,
        responses={200: WebhookEndpointSerializer, 422: _422},
    )
    def patch(self, request: Request, pk: int) -> Response:
        principal = principal_of(request)
        endpoint = selectors.webhook_endpoint_get_for(principal, pk)
        data = WebhookEndpointUpdateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = services.webhook_endpoint_update(
            principal=principal, endpoint=endpoint, actor=actor_from_request(request), **data.validated_data
        )
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(operation_id="webhook_endpoints_destroy", responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        endpoint = selectors.webhook_endpoint_get_for(principal_of(request), pk)
        services.webhook_endpoint_delete(endpoint=endpoint, actor=actor_from_request(request))
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookEndpointRotateSecretView(PartnerGenericAPIView):
    write_scope = Scope.WEBHOOKS_WRITE
    serializer_class = WebhookSecretRotatedSerializer

    @extend_schema(
        operation_id="webhook_endpoints_rotate_secret", request=None, responses=WebhookSecretRotatedSerializer
    )
    def post(self, request: Request, pk: int) -> Response:
        endpoint = selectors.webhook_endpoint_get_for(principal_of(request), pk)
        secret, plaintext = services.webhook_endpoint_rotate_secret(
            endpoint=endpoint, actor=actor_from_request(request)
        )
        previous = secret.created_at + timedelta(hours=float(settings.WEBHOOKS["ROTATION_OVERLAP_HOURS"]))
        return Response(
            WebhookSecretRotatedSerializer({"secret": plaintext, "previous_secrets_expire_at": previous}).data
        )


class WebhookAttemptListView(PartnerGenericAPIView):
    read_scope = Scope.WEBHOOKS_READ
    serializer_class = WebhookAttemptSerializer
    filterset_class = WebhookAttemptFilter
    queryset = WebhookAttempt.objects.none()  # the schema's model; get() reads through the selector

    @extend_schema(operation_id="webhook_endpoints_attempts", responses=WebhookAttemptSerializer(many=True))
    def get(self, request: Request, pk: int) -> Response:
        endpoint = selectors.webhook_endpoint_get_for(principal_of(request), pk)
        page = self.paginate_queryset(self.filter_queryset(selectors.webhook_attempts_of(endpoint))) or []
        return self.get_paginated_response(WebhookAttemptSerializer(page, many=True).data)


class EventListView(PartnerGenericAPIView):
    """Events in commit order (`position`); each key sees the types its read scopes allow, of its employers.
    Filtering on a type the key may not read is 403, on an employer it may not act for 404 — as the stream
    answers (ADR 0064)."""

    serializer_class = EventSerializer
    filterset_class = EventFilter
    pagination_class = PositionPagination

    def get_queryset(self) -> QuerySet[Event]:
        return selectors.events_visible_to(principal_of(self.request))

    @extend_schema(operation_id="events_list", responses=EventSerializer(many=True))
    def get(self, request: Request) -> Response:
        events = self.filter_queryset(self.get_queryset())  # 422 for a value that does not parse, first
        employer = request.query_params.get("employer")
        refusal = selectors.event_filter_refusal(
            principal_of(request),
            types=request.query_params.getlist("type"),
            object_types=request.query_params.getlist("object_type"),  # valid once the filter set took them
            employer_id=int(employer) if employer else None,  # a valid id once the filter set took it
        )
        if refusal is not None:
            status_code, detail = refusal
            raise ProblemError(status_code=status_code, detail=detail)
        page = self.paginate_queryset(events) or []
        return self.get_paginated_response(EventSerializer(page, many=True).data)


class EventDetailView(PartnerGenericAPIView):
    serializer_class = EventSerializer

    @extend_schema(operation_id="events_retrieve", responses=EventSerializer)
    def get(self, request: Request, public_id: str) -> Response:
        return Response(EventSerializer(selectors.event_get_for(principal_of(request), public_id)).data)


class EventRedeliveredSerializer(Serializer):
    queued = serializers.IntegerField(
        help_text="Deliveries queued: one per active subscribed endpoint without one already pending (0 when all "
        "have one pending). With no active subscribed endpoint the answer is 409 `no-subscribed-endpoint`."
    )


class EventRedeliverView(PartnerGenericAPIView):
    write_scope = Scope.WEBHOOKS_WRITE
    serializer_class = EventRedeliveredSerializer

    @extend_schema(
        operation_id="events_redeliver",
        request=None,
        responses={
            202: EventRedeliveredSerializer,
            409: OpenApiResponse(
                description="`no-subscribed-endpoint`: no active endpoint of the caller receives this event's type "
                "(and employer); nothing was queued."
            ),
        },
    )
    def post(self, request: Request, public_id: str) -> Response:
        principal = principal_of(request)
        event = selectors.event_get_for(principal, public_id)
        endpoints = list(selectors.webhook_endpoints_visible_to(principal))
        queued = services.event_redeliver(event=event, endpoints=endpoints, actor=actor_from_request(request))
        return Response({"queued": queued}, status=status.HTTP_202_ACCEPTED)
