from __future__ import annotations

import json
from typing import Any

import standardwebhooks
import structlog
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import permissions, views
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response

from apps.audit.services import insurer_exchange_record
from apps.common.errors import ProblemError
from apps.insurers import services
from apps.insurers.api.serializers import (
    InsurerCallbackBatchSerializer,
    InsurerCallbackEventSerializer,
    InsurerCallbackResponseSerializer,
    InsurerCircuitSerializer,
    Unresolvable,
)
from apps.insurers.callback_secrets import CallbackSecretError, callback_secret_open
from apps.insurers.models import Insurer
from apps.partners.api.base import PartnerGenericAPIView
from apps.partners.contracts import Scope

log = structlog.get_logger(__name__)

_PROBLEM = OpenApiResponse(OpenApiTypes.OBJECT, description="RFC 9457 problem details")


class InsurerCircuitView(PartnerGenericAPIView):
    """Circuit-breaker state of one insurer's gateway, as every worker sees it (§8)."""

    read_scope = Scope.EMPLOYERS_READ
    serializer_class = InsurerCircuitSerializer

    @extend_schema(operation_id="insurers_circuit_retrieve", responses={200: InsurerCircuitSerializer, 404: _PROBLEM})
    def get(self, request: Request, code: str) -> Response:
        insurer = get_object_or_404(Insurer, code=code)
        state = services.insurer_circuit_state(insurer.code)
        return Response(InsurerCircuitSerializer({"insurer": insurer.code, **state}).data)


def _callback_item(event: dict[str, Any]) -> services.CallbackItem:
    """A validated event → the service's item; an id or key that can name nothing makes it unresolvable
    (404 for that item, SPEC §8), never a database error."""
    key = event["data"].get("idempotency_key")
    endorsement_id = event["data"].get("endorsement_id")
    resolvable = not isinstance(key, Unresolvable) and (key is not None or not isinstance(endorsement_id, Unresolvable))
    return services.CallbackItem(
        event_type=event["type"],
        idempotency_key=key if isinstance(key, str) else None,
        endorsement_id=endorsement_id if isinstance(endorsement_id, int) else None,
        insurer_reference=event["data"].get("insurer_reference") or "",
        reason=event["data"].get("reason") or "",
        resolvable=resolvable,
    )


def _unauthorized(detail: str) -> ProblemError:
    return ProblemError(
        status_code=401,
        detail=detail,
        slug="invalid-webhook-signature",
        headers={"WWW-Authenticate": 'Signature realm="insurer-callbacks"'},
    )


class InsurerCallbackView(views.APIView):
    """Results an insurer sends back, signed with Standard Webhooks (the insurer's `whsec_` secret).

    No API key: the signature is the authentication. The raw body is verified before it is parsed.
    """

    authentication_classes: list[Any] = []
    permission_classes = [permissions.AllowAny]
    # The body is read raw (the signature covers the exact bytes); this only shapes the schema.
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="insurer_callbacks_create",
        auth=[{}],  # type: ignore[list-item]  # `security: [{}]`: no API key, the signature authenticates
        request=PolymorphicProxySerializer(
            component_name="InsurerCallback",
            serializers=[InsurerCallbackEventSerializer, InsurerCallbackBatchSerializer],
            resource_type_field_name=None,
        ),
        parameters=[
            OpenApiParameter("webhook-id", str, OpenApiParameter.HEADER, required=True),
            OpenApiParameter("webhook-timestamp", str, OpenApiParameter.HEADER, required=True),
            OpenApiParameter("webhook-signature", str, OpenApiParameter.HEADER, required=True),
        ],
        responses={200: InsurerCallbackResponseSerializer, 401: _PROBLEM, 404: _PROBLEM, 422: _PROBLEM},
    )
    def post(self, request: Request, insurer_code: str) -> Response:
        insurer = Insurer.objects.filter(code=insurer_code).first()
        if insurer is None:
            raise ProblemError(status_code=404, detail="No insurer with this code.")
        raw = request.body
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower().startswith("webhook-")}
        if not insurer.callback_secret:
            self._record(insurer_code, raw, 401, "insurer has no callback secret")
            raise _unauthorized("This insurer has no callback secret configured.")
        try:
            # Opened in memory only to verify (sealed at rest, ADR 0044).
            secret = callback_secret_open(insurer.callback_secret, insurer_code=insurer.code)
        except CallbackSecretError as exc:
            log.error("insurers.callback_secret_unreadable", insurer=insurer.code, error=str(exc))
            self._record(insurer_code, raw, 401, "callback secret cannot be opened")
            raise _unauthorized("This insurer's callback secret cannot be used; an operator must set it again.")
        try:
            standardwebhooks.Webhook(secret).verify(raw, headers, json_parse=False)
        except (standardwebhooks.WebhookVerificationError, ValueError) as exc:
            self._record(insurer_code, raw, 401, f"signature rejected: {exc}")
            raise _unauthorized("The webhook signature or timestamp is missing, invalid or outside ±5 minutes.")

        if len(headers["webhook-id"]) > 255:
            self._record(insurer_code, raw, 422, "webhook-id too long")
            raise ProblemError(status_code=422, detail="webhook-id is longer than 255 characters.")
        try:
            body = json.loads(raw)
        except ValueError:
            self._record(insurer_code, raw, 400, "malformed JSON")
            raise ProblemError(status_code=400, detail="The body is not valid JSON.", slug="malformed-request")
        events = body.get("events") if isinstance(body, dict) and "events" in body else [body]
        data = InsurerCallbackBatchSerializer(data={"events": events})
        if not data.is_valid():
            self._record(insurer_code, raw, 422, "invalid events")
            data.is_valid(raise_exception=True)
        items = [_callback_item(event) for event in data.validated_data["events"]]
        results = services.insurer_callback_receive(insurer=insurer, webhook_id=headers["webhook-id"], items=items)
        response_body = {"results": results}
        self._record(
            insurer_code,
            raw,
            200,
            "",
            response_body,
            endorsement_id=items[0].endorsement_id if len(items) == 1 else None,
        )
        return Response(response_body)

    @staticmethod
    def _record(
        insurer_code: str,
        raw: bytes,
        status: int,
        error: str,
        response_body: Any = None,
        endorsement_id: int | None = None,
    ) -> None:
        insurer_exchange_record(
            insurer_code=insurer_code,
            operation="callback",
            direction="inbound",
            endpoint=f"/api/v1/insurer-callbacks/{insurer_code}",
            request_body=raw,
            response_status=status,
            response_body=response_body,
            error=error,
            endorsement_id=endorsement_id,
        )
