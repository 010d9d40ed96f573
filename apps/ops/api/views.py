"""`GET /api/v1/analytics/endorsements` (SPEC §11, issue 14; caching and definitions: ADR 0033)."""

from __future__ import annotations

import hashlib
from typing import Any

import structlog
from django.conf import settings
from django.core.cache import cache
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from apps.common.errors import DomainValidationError
from apps.common.ids import BIGINT_MAX
from apps.employers.selectors import employer_get_for, employers_visible_to
from apps.endorsements.analytics import EmployerScope, analytics_range_parse, endorsement_analytics
from apps.ops.api.serializers import EndorsementAnalyticsSerializer
from apps.partners.api.base import PartnerGenericAPIView, principal_of
from apps.partners.contracts import Scope

log = structlog.get_logger(__name__)


class EndorsementAnalyticsView(PartnerGenericAPIView):
    read_scope = Scope.ANALYTICS_READ
    serializer_class = EndorsementAnalyticsSerializer
    pagination_class = None

    @extend_schema(
        operation_id="analytics_endorsements",
        parameters=[
            OpenApiParameter(
                "employer", OpenApiTypes.INT, description="employer id (default: every employer this key may act for)"
            ),
            OpenApiParameter("from", OpenApiTypes.DATE, description="first day received, Asia/Kolkata, inclusive"),
            OpenApiParameter("to", OpenApiTypes.DATE, description="last day received, Asia/Kolkata, inclusive"),
        ],
        responses={
            200: EndorsementAnalyticsSerializer,
            422: OpenApiResponse(description="not a date, `from` after `to`, or over 366 days"),
        },
    )
    def get(self, request: Request) -> Response:
        principal = principal_of(request)
        rng = analytics_range_parse(from_raw=request.query_params.get("from"), to_raw=request.query_params.get("to"))
        raw_employer = request.query_params.get("employer")
        employer_id: int | None = None
        if raw_employer not in (None, ""):
            try:
                employer_id = int(raw_employer)  # type: ignore[arg-type]
            except ValueError:
                raise DomainValidationError({"employer": "A valid integer id is required."}) from None
            if not 1 <= employer_id <= BIGINT_MAX:  # never reaches the database (ADR 0015)
                raise DomainValidationError({"employer": f"An id from 1 to {BIGINT_MAX} is required."})
            employer_get_for(principal, employer_id)  # 404 for an employer this key may not act for
            scope = EmployerScope(employer_ids=(employer_id,))
        elif principal.all_employers:
            scope = EmployerScope(partner_id=principal.partner_id)
        else:
            scope = EmployerScope(
                partner_id=principal.partner_id,
                employer_ids=tuple(sorted(employers_visible_to(principal).values_list("pk", flat=True))),
            )
        scope_key = hashlib.sha256(repr(scope).encode()).hexdigest()[:24]
        trend_hour = rng.trend_end.strftime("%Y%m%d%H")
        key = f"analytics:endorsements:v1:{scope_key}:{rng.from_date}:{rng.to_date}:{trend_hour}"
        # A short TTL bounds how stale a figure can be (ADR 0033); the key includes the key's employer scope.
        ttl = settings.ANALYTICS_CACHE_SECONDS
        body = _cached(key)
        if body is None:
            body = {"employer": employer_id, **endorsement_analytics(scope=scope, rng=rng)}
            _cache_set(key, body, ttl)
        return Response(body, headers={"Cache-Control": f"private, max-age={ttl}"})


# The response cache is an optimisation (ADR 0033): with the cache (Redis) down the figures are computed from the
# database, as `/ready` reports the cache only as degraded — never a 500.
def _cached(key: str) -> Any:
    try:
        return cache.get(key)
    except Exception as exc:
        log.warning("analytics.cache_unavailable", error=f"{type(exc).__name__}: {exc}"[:300])
        return None


def _cache_set(key: str, body: Any, ttl: int) -> None:
    try:
        cache.set(key, body, timeout=ttl)
    except Exception as exc:
        log.warning("analytics.cache_unavailable", error=f"{type(exc).__name__}: {exc}"[:300])
