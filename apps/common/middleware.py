"""The API's edge (issue 8, kinds 4, 12, 13; ADR 0015). In request order:

1. `RequestIdMiddleware` — every response carries `X-Request-ID`: a valid client-sent id is kept, anything
   else is replaced by a fresh one; django-structlog logs the same id, and every problem+json body under
   /api/ carries it as `request_id`.
2. `ApiProblemMiddleware` — under /api/ (and `/api` itself), every error response is problem+json, whoever
   produced it (Django's router 404, a 405, a 500 rendered by Django, a 503, a renderer that was not JSON);
   a path holding a control character is a 404 before any view looks it up (issue 8, kinds 3 and 12).
3. `RequestSizeLimitMiddleware` — 413 before anything reads a body larger than its endpoint accepts
   (1 MiB; `POST /api/v1/endorsement-batches` 20 MiB), whatever the content type, declared or chunked; under ASGI
   the entry point stopped receiving it at that limit (`apps.common.asgi`, ADR 0065).
4. `JsonNestingGuardMiddleware` — 400 for a body nested deeper than `API_MAX_JSON_DEPTH`, before any code
   that parses JSON runs (the Idempotency-Key fingerprint, DRF's parser, insurer callbacks).

`RequestLogMiddleware` (django-structlog's request log) logs a response marked as a client fault
(`mark_client_fault`) at warning, whatever its status.
"""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar

from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse
from django_structlog.middlewares import RequestMiddleware

from apps.common.errors import PROBLEM_CONTENT_TYPE, problem_response
from apps.common.parsers import NESTING_CHECKED_META, json_nesting_exceeds, max_json_depth

REQUEST_ID_HEADER = "X-Request-ID"
_REQUEST_ID_META = "HTTP_X_REQUEST_ID"
#: A client's request id is kept when it is 1–128 characters of this set (UUIDs, ULIDs, trace ids);
#: anything else (control characters, spaces, very long values) is replaced, never echoed.
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:=/+-]{0,127}")
API_PREFIX = "/api/"
# C0/C1 controls and lone surrogates (`apps.common.text`): no Keel resource has one in its address, and a NUL
# in a lookup is an error in PostgreSQL rather than "not found".
_PATH_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
#: The one endpoint with the upload limit (CSV or JSON batches of up to 50,000 rows); only for POST.
UPLOAD_ENDPOINTS = frozenset({("POST", "/api/v1/endorsement-batches")})
#: Set in an ASGI request's scope when `apps.common.asgi` stopped reading its body at the endpoint's limit.
BODY_OVER_LIMIT = "keel.body_over_limit"
# Headers an error response keeps when it is rewritten as problem+json.
_DROPPED_HEADERS = frozenset({"content-type", "content-length"})

Handler = Callable[[HttpRequest], HttpResponse]


def is_api_path(path: str) -> bool:
    """Whether `path` is the API's (under /api/, or /api itself)."""
    return path.startswith(API_PREFIX) or path == API_PREFIX[:-1]


def request_id_of(request: HttpRequest) -> str | None:
    """The id `RequestIdMiddleware` gave this request (None outside a request that went through it)."""
    return getattr(request, "request_id", None)


class RequestIdMiddleware:
    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        sent = request.META.get(_REQUEST_ID_META, "")
        request_id = sent if isinstance(sent, str) and REQUEST_ID_RE.fullmatch(sent) else str(uuid.uuid4())
        # django-structlog reads the header later in the chain: it logs the id the client will see.
        request.META[_REQUEST_ID_META] = request_id
        request.__dict__.pop("headers", None)  # `request.headers` is cached; drop a copy made before us
        request.request_id = request_id  # type: ignore[attr-defined]
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        if is_api_path(request.path) and _is_problem(response):
            _add_request_id(response, request_id)
        return response


def _is_problem(response: HttpResponse) -> bool:
    return not response.streaming and response.get("Content-Type", "").startswith(PROBLEM_CONTENT_TYPE)


def _add_request_id(response: HttpResponse, request_id: str) -> None:
    if hasattr(response, "render") and not getattr(response, "is_rendered", True):
        response.render()
    try:
        body = json.loads(response.content)
    except ValueError:
        return
    if isinstance(body, dict) and "request_id" not in body:
        body["request_id"] = request_id
        response.content = json.dumps(body).encode()
        if response.has_header("Content-Length"):
            # CommonMiddleware (inside this one) already measured the body without the id: measure it again, or
            # clients read a truncated document (newcomer trial of issue 12).
            response["Content-Length"] = str(len(response.content))


class ApiProblemMiddleware:
    """Rewrites any non-problem error response under /api/ as problem+json with the same status and headers.

    DRF views already answer problem+json (`problem_exception_handler`); this catches what happens outside
    them: URL resolution (404, also with `DEBUG=True`), Django's own 400/403/500 pages, a 405 from a plain
    view, and anything a middleware answers."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        api = is_api_path(request.path)
        if api and _PATH_CONTROL_RE.search(request.path):
            return problem_response(request, 404, _generic_detail(404))
        response = self.get_response(request)
        if response.status_code < 400 or not api or response.streaming:
            return response
        if _is_problem(response) and _json_body(response):
            return response
        problem = problem_response(request, response.status_code, _generic_detail(response.status_code))
        for name, value in response.items():
            if name.lower() not in _DROPPED_HEADERS:
                problem[name] = value
        return problem


def _json_body(response: HttpResponse) -> bool:
    """Whether a problem response's body really is JSON: a view whose renderer is not JSON (the schema view
    asked for `?format=xml`) renders the problem in its own format under the problem content type."""
    if hasattr(response, "render") and not getattr(response, "is_rendered", True):
        response.render()
    return response.content.lstrip()[:1] == b"{"


def _generic_detail(status_code: int) -> str:
    if status_code == 404:
        return "No resource exists at this address."
    if status_code == 405:
        return "This method is not allowed on this resource."
    if status_code >= 500:
        return "An unexpected error occurred."
    return "The request could not be processed."


def body_limit_for(request: HttpRequest) -> int:
    """Bytes a request body may have (SPEC §2 "Bounded input"): the upload limit for the batch endpoint's
    POST, the body limit for everything else — whatever the content type (multipart included)."""
    return body_limit(request.method or "", request.path)


def body_limit(method: str, path: str) -> int:
    """`body_limit_for` from a request's method and path (the ASGI entry has no request yet: ADR 0065)."""
    if (method, path.rstrip("/")) in UPLOAD_ENDPOINTS:
        return int(settings.API_MAX_UPLOAD_BYTES)
    return int(settings.API_MAX_BODY_BYTES)


class RequestSizeLimitMiddleware:
    """413 for an API body over its endpoint's limit, before anything reads it.

    1. A declared `Content-Length` over the limit → 413 at once (the body is never read).
    2. Under ASGI, a body the entry point stopped reading at the limit (`BODY_OVER_LIMIT` in the scope,
       `apps.common.asgi`, ADR 0065) → 413.
    3. A body without a `Content-Length` (chunked): when the server hands it over de-chunked — always under ASGI,
       whose handler has received it whole (at most the limit, point 2); under WSGI when gunicorn sets
       `wsgi.input_terminated` — at most limit + 1 bytes are read; more → 413, otherwise the bytes read become
       the request's body and its `Content-Length`. A WSGI server that cannot terminate the input gets 411
       (Length Required) rather than a read that never ends.
    """

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        limit = body_limit_for(request)
        declared = request.META.get("CONTENT_LENGTH") or ""
        if declared:
            try:
                length = int(declared)
            except ValueError:
                return problem_response(request, 400, "Content-Length is not a number.", slug="malformed-request")
            if length > limit:
                return _too_large(request, limit, f"The request body is {length} bytes")
        asgi = isinstance(request, ASGIRequest)
        if isinstance(request, ASGIRequest) and request.scope.get(BODY_OVER_LIMIT):
            return _too_large(request, limit, "The request body (sent without a length) is longer than allowed")
        if declared:
            return self.get_response(request)
        if asgi or "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
            if asgi:
                stream = request._stream
            elif request.META.get("wsgi.input_terminated"):
                stream = request.META["wsgi.input"]
            else:
                return problem_response(request, 411, "Send a Content-Length with the request body.")
            data = stream.read(limit + 1)
            if len(data) > limit:
                return _too_large(request, limit, "The request body (sent without a length) is longer than allowed")
            if asgi and not data:  # no body at all (a GET): nothing to hand on
                return self.get_response(request)
            request.META["CONTENT_LENGTH"] = str(len(data))
            request._stream = LimitedStream(io.BytesIO(data), len(data))  # type: ignore[assignment]
        return self.get_response(request)


def _too_large(request: HttpRequest, limit: int, what: str) -> HttpResponse:
    return problem_response(
        request,
        413,
        f"{what}; this endpoint accepts at most {limit} bytes.",
        slug="payload-too-large",
        extra={"max_bytes": limit},
    )


class JsonNestingGuardMiddleware:
    """400 problem+json for an API body nested deeper than `API_MAX_JSON_DEPTH` (see `apps.common.parsers`).

    It runs before the view, so the Idempotency-Key fingerprint (which canonicalises JSON bodies) and the
    insurer callback view (which parses its raw body itself) never see such a body. Any body is checked, not
    only `application/json`: the fingerprint parses whatever parses. Bodies are bounded by
    `RequestSizeLimitMiddleware`, which runs first."""

    def __init__(self, get_response: Handler) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.startswith(API_PREFIX) and request.META.get("CONTENT_LENGTH") not in (None, "", "0"):
            limit = max_json_depth()
            body = request.body
            if json_nesting_exceeds(body, limit):
                return problem_response(
                    request,
                    400,
                    f"The JSON body is nested more than {limit} levels deep.",
                    slug="nesting-too-deep",
                    title="Bad Request",
                )
            request.META[NESTING_CHECKED_META] = len(body)
        return self.get_response(request)


# --- request log -------------------------------------------------------------------------------------------

_LEVEL_OVERRIDE: ContextVar[int | None] = ContextVar("request_log_level_override", default=None)


def mark_client_fault(response: HttpResponse) -> HttpResponse:
    """Mark a 5xx that a protocol requires for the caller's mistake (a SOAP 1.1 `Client` fault is HTTP 500) so
    it is logged at warning, not as a server error: by `RequestLogMiddleware`, and not at all by Django's
    `django.request` "Internal Server Error" (the view logs the fault itself)."""
    response.keel_client_fault = True  # type: ignore[attr-defined]
    response._has_been_logged = True  # type: ignore[attr-defined]  # django.utils.log.log_response skips it
    return response


class RequestLogMiddleware(RequestMiddleware):  # type: ignore[misc]
    """django-structlog's `request_finished` log, at warning for a response `mark_client_fault` marked (the
    level is chosen from the status code alone upstream; a context variable carries the override, so
    concurrent requests never see each other's)."""

    def handle_response(self, request: HttpRequest, response: HttpResponse) -> None:
        token = _LEVEL_OVERRIDE.set(logging.WARNING if getattr(response, "keel_client_fault", False) else None)
        try:
            super().handle_response(request, response)
        finally:
            _LEVEL_OVERRIDE.reset(token)

    def _log_level_for_status_code(self, status_code: int) -> int:
        override = _LEVEL_OVERRIDE.get()
        return override if override is not None else int(super()._log_level_for_status_code(status_code))
