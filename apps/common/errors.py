"""RFC 9457 problem details for every error the API returns.

DRF errors go through `problem_exception_handler`; errors raised before DRF runs (404 for an unknown URL,
413 from the size-limit middleware, 500) go through `problem_response` via the URLconf handlers, and
`apps.common.middleware.ApiProblemMiddleware` rewrites any other error response under /api/ (ADR 0015).
Every problem body under /api/ carries the request's `request_id` (added by `RequestIdMiddleware`). Field
validation failures are 422 with `errors: [{pointer, detail}]` (JSON Pointers into the request body).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

import structlog
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://keel.example/problems/"
# Paths whose errors are problem+json; the admin and ops pages keep Django's HTML pages.
API_PREFIXES = ("/api/", "/health", "/ready", "/metrics")

log = structlog.get_logger(__name__)


class ProblemError(exceptions.APIException):
    """An API error with a stable `type` slug and optional extra members (e.g. `existing_id`)."""

    def __init__(
        self,
        *,
        status_code: int,
        detail: str,
        slug: str | None = None,
        title: str | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail=detail)
        self.status_code = status_code
        self.slug = slug or _slug(status_code)
        self.title = title or HTTPStatus(status_code).phrase
        self.extra = dict(extra or {})
        _refuse_reserved_members(self.extra)
        self.headers = dict(headers or {})


class Conflict(ProblemError):
    def __init__(self, detail: str, *, slug: str = "conflict", extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(status_code=409, detail=detail, slug=slug, extra=extra)


class DomainValidationError(Exception):
    """Raised by services for business-rule failures; rendered as 422 with one error per field.

    `errors` maps a field path ("employee.date_of_birth", "rows.3.email") to its message(s).
    """

    def __init__(self, errors: Mapping[str, str | Iterable[str]], detail: str | None = None) -> None:
        super().__init__(detail or "The request is not valid.")
        self.errors = {k: [v] if isinstance(v, str) else list(v) for k, v in errors.items()}
        self.detail = detail or "The request is not valid."


def _slug(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase.lower().replace(" ", "-").replace("'", "")
    except ValueError:
        return "error"


def pointer(path: Iterable[str | int]) -> str:
    parts = [str(p).replace("~", "~0").replace("/", "~1") for p in path]
    return "/" + "/".join(parts) if parts else ""


def flatten_errors(detail: Any, path: tuple[str | int, ...] = ()) -> list[dict[str, str]]:
    """DRF's nested error structure → [{pointer, detail}] with JSON Pointers."""
    out: list[dict[str, str]] = []
    if isinstance(detail, Mapping):
        for key, value in detail.items():
            sub = path if key in ("non_field_errors", "__all__") else (*path, key)
            out.extend(flatten_errors(value, sub))
    elif isinstance(detail, list):
        if detail and all(isinstance(d, (str, exceptions.ErrorDetail)) for d in detail):
            out.extend({"pointer": pointer(path), "detail": str(d)} for d in detail)
        else:
            for i, item in enumerate(detail):
                if item:
                    out.extend(flatten_errors(item, (*path, i)))
    elif detail:
        out.append({"pointer": pointer(path), "detail": str(detail)})
    return out


def problem_body(
    *,
    status_code: int,
    detail: str,
    instance: str | None,
    slug: str | None = None,
    title: str | None = None,
    errors: list[dict[str, str]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + (slug or _slug(status_code)),
        "title": title or HTTPStatus(status_code).phrase,
        "status": status_code,
        "detail": detail,
        "instance": instance,
    }
    if errors is not None:
        body["errors"] = errors
    if extra:
        _refuse_reserved_members(extra)
        body.update(extra)
    return body


# RFC 9457 §3.1 members (and Keel's own): an extension member must not overwrite them — a run's state as
# `"status": "COMPLETED"` broke every client reading the HTTP status from the body (newcomer trial).
RESERVED_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "errors", "request_id"})


def _refuse_reserved_members(extra: Mapping[str, Any]) -> None:
    """Raise `ValueError` (a programming error, caught by the tests of each caller) for an extension member
    named like a standard one."""
    clash = RESERVED_MEMBERS.intersection(extra)
    if clash:
        raise ValueError(f"problem extension members {sorted(clash)} would overwrite RFC 9457 members")


def problem_response(request: HttpRequest | None, status_code: int, detail: str, **kwargs: Any) -> JsonResponse:
    """A problem+json response outside DRF (middleware, URLconf handlers)."""
    headers = kwargs.pop("headers", None) or {}
    body = problem_body(status_code=status_code, detail=detail, instance=request.path if request else None, **kwargs)
    response = JsonResponse(body, status=status_code, content_type=PROBLEM_CONTENT_TYPE)
    for name, value in headers.items():
        response[name] = value
    return response


def problem_invalid_field(request: HttpRequest | None, field: str, message: str) -> JsonResponse:
    """The 422 problem+json of the API's validation errors (`errors: [{pointer: "/<field>", detail}]`) for one bad
    field, outside DRF (the async stream views)."""
    return problem_response(
        request,
        422,
        "The request is not valid.",
        slug="validation-error",
        title="Validation failed",
        errors=[{"pointer": pointer([field]), "detail": message}],
    )


def _as_api_exception(exc: Exception) -> Exception:
    """Django's and the database's exceptions in DRF's terms: 413, 404, 403, and a retryable 503 for an
    unreachable database (SPEC §2); any other exception unchanged."""
    if isinstance(exc, RequestDataTooBig):
        return ProblemError(status_code=413, detail="The request body is larger than this endpoint accepts.")
    if isinstance(exc, Http404):
        return exceptions.NotFound()
    if isinstance(exc, PermissionDenied):
        return exceptions.PermissionDenied()
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database is unreachable or refused the connection: a retryable 503, not a 500 (SPEC §2).
        log.warning("api.database_unavailable", exc_type=type(exc).__name__)
        return ProblemError(
            status_code=503,
            detail="The service is temporarily unavailable; retry shortly.",
            slug="service-unavailable",
            headers={"Retry-After": "5"},
        )
    return exc


def problem_exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's exception handler answering problem+json (RFC 9457, SPEC §2): 422 with `errors[]` (JSON pointers)
    for validation, the APIException's status otherwise (its headers kept, `Retry-After` on 429), 500 with no
    detail for anything unhandled (logged with its traceback)."""
    request = context.get("request")
    instance = request.path if request is not None else None

    if isinstance(exc, DomainValidationError):
        errors = [
            {"pointer": pointer(k.split(".")) if k else "", "detail": m} for k, ms in exc.errors.items() for m in ms
        ]
        body = problem_body(
            status_code=422,
            detail=exc.detail,
            instance=instance,
            slug="validation-error",
            title="Validation failed",
            errors=errors,
        )
        return Response(body, status=422, content_type=PROBLEM_CONTENT_TYPE)
    exc = _as_api_exception(exc)
    if isinstance(exc, exceptions.ValidationError):
        body = problem_body(
            status_code=422,
            detail="The request is not valid.",
            instance=instance,
            slug="validation-error",
            title="Validation failed",
            errors=flatten_errors(exc.detail),
        )
        return Response(body, status=422, content_type=PROBLEM_CONTENT_TYPE)

    response = drf_exception_handler(exc, context)
    if response is None:
        # Unhandled: logged with its traceback, answered without one.
        log.exception("api.unhandled_error", exc_type=type(exc).__name__)
        body = problem_body(status_code=500, detail="An unexpected error occurred.", instance=instance)
        return Response(body, status=500, content_type=PROBLEM_CONTENT_TYPE)

    assert isinstance(exc, exceptions.APIException)
    detail = exc.detail if isinstance(exc.detail, str) else "The request could not be processed."
    slug = getattr(exc, "slug", None)
    title = getattr(exc, "title", None)
    extra = getattr(exc, "extra", None)
    if isinstance(exc, exceptions.ParseError):
        slug = slug or "malformed-request"
    body = problem_body(
        status_code=response.status_code, detail=str(detail), instance=instance, slug=slug, title=title, extra=extra
    )
    new = Response(body, status=response.status_code, content_type=PROBLEM_CONTENT_TYPE)
    for name, value in response.items():
        if name.lower() not in ("content-type", "content-length"):
            new[name] = value
    for name, value in getattr(exc, "headers", {}).items():
        new[name] = value
    wait = getattr(exc, "wait", None)
    if isinstance(exc, exceptions.Throttled) and wait is not None:
        new["Retry-After"] = str(int(wait))
    return new


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if not request.path.startswith(API_PREFIXES):
        return defaults.page_not_found(request, exception or Http404())
    return problem_response(request, status.HTTP_404_NOT_FOUND, "No resource exists at this address.")


def handler500(request: HttpRequest) -> HttpResponse:
    if not request.path.startswith(API_PREFIXES):
        return defaults.server_error(request)
    return problem_response(request, status.HTTP_500_INTERNAL_SERVER_ERROR, "An unexpected error occurred.")


def handler400(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return problem_response(request, status.HTTP_400_BAD_REQUEST, "The request could not be processed.")


def handler403(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return problem_response(request, status.HTTP_403_FORBIDDEN, "You may not perform this action.")
