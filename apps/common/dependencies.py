"""A dependency the request needs is down → 503 problem+json with `Retry-After`, never a 500 (SPEC §2, §12).

Two hooks, because Django and DRF handle exceptions in different places:

- `problem_or_unavailable_handler` is DRF's exception handler: a database outage raised inside an API view
  (authentication included) becomes 503; everything else goes on to `apps.common.errors`.
- `DependencyUnavailableMiddleware.process_exception` does the same for non-DRF views (admin, sandbox).

What counts as "the database is unavailable": Django's `OperationalError`/`InterfaceError` (connection
refused, server closed the connection, restarting) and psycopg_pool's `PoolTimeout` (no connection could be
had within DATABASE_POOL_TIMEOUT, 1.5 s by default — the pool cannot reconnect while PostgreSQL is down).
A statement-level error such as a constraint violation is an `IntegrityError`/`DataError`, never matched here.
Redis being down is not a 503: the API keeps accepting writes (ADR 0026).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse
from prometheus_client import Counter
from psycopg_pool import PoolTimeout
from rest_framework.response import Response

from apps.common.errors import PROBLEM_CONTENT_TYPE, problem_body, problem_exception_handler, problem_response

log = logging.getLogger(__name__)

# Seconds a client is asked to wait before retrying while the database is unavailable.
RETRY_AFTER_SECONDS = 5

UNAVAILABLE = Counter(
    "keel_dependency_unavailable_total", "Requests answered 503 because a dependency was down", ["dependency"]
)


def is_database_unavailable(exc: BaseException) -> bool:
    """Whether `exc` (or its cause) says the database cannot be reached right now."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return False
        if isinstance(seen, OperationalError | InterfaceError | PoolTimeout):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _detail() -> str:
    return "The database is unavailable; nothing was changed. Retry the request later."


def problem_or_unavailable_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's exception handler: 503 for a database outage, else `apps.common.errors.problem_exception_handler`."""
    if is_database_unavailable(exc):
        request = context.get("request")
        UNAVAILABLE.labels(dependency="database").inc()
        log.warning("api.database_unavailable", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
        body = problem_body(
            status_code=503,
            detail=_detail(),
            instance=request.path if request is not None else None,
            slug="service-unavailable",
            title="Service Unavailable",
        )
        return Response(
            body, status=503, content_type=PROBLEM_CONTENT_TYPE, headers={"Retry-After": str(RETRY_AFTER_SECONDS)}
        )
    return problem_exception_handler(exc, context)


class DependencyUnavailableMiddleware:
    """503 problem+json for a database outage raised by a non-DRF view (DRF views use the handler above)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_database_unavailable(exception):
            return None
        UNAVAILABLE.labels(dependency="database").inc()
        log.warning("http.database_unavailable", extra={"error": f"{type(exception).__name__}"})
        response = problem_response(request, 503, _detail(), slug="service-unavailable", title="Service Unavailable")
        response["Retry-After"] = str(RETRY_AFTER_SECONDS)
        return response
