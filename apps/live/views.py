"""`GET /api/v1/events/stream`: a partner's events as Server-Sent Events, as they are committed (ADR 0050).

A sync view whose body is an async generator: under the ASGI server the opening runs on a request thread and the
stream itself on the event loop, holding no thread while it waits (ADR 0069, 0071). Authentication is the
API's (the DRF authentication classes in settings: Bearer token or API key, the same `Principal`), the events a
caller sees are those `GET /api/v1/events` lists (`events_visible_to`: its partner, the types its read scopes
allow, its employers), and the connection counts once against its rate limit.

Query: `type` (repeatable or comma-separated; each must be readable with the caller's scopes, else 403) and
`employer` (an employer the caller may act for, else 404). `Last-Event-ID` (header) or `last_event_id`
(query) names the last event received: the stream resumes right after its commit-order position, so nothing
committed meanwhile is lost and, within a connection, nothing is sent twice. Without it the stream starts at
the newest committed event. Every event is `id: <event id>`, `event: <type>`, `data: <the event JSON>`; a
comment line is sent every `EVENT_STREAM_HEARTBEAT_SECONDS` so proxies keep an idle connection.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from django.views.decorators.csrf import csrf_exempt
from rest_framework import exceptions
from rest_framework.settings import api_settings

from apps.common.errors import problem_invalid_field, problem_response
from apps.common.serializers import choices_message
from apps.common.text import EMPTY_PARAMETER_MESSAGE, UNKNOWN_PARAMETER_MESSAGE, control_character_error
from apps.live.hub import LiveEvent, live_event_of
from apps.live.schema import STREAM_QUERY_PARAMETERS
from apps.live.streaming import resume_id, sse_body, sse_response
from apps.partners.contracts import Principal
from apps.partners.ratelimit import rate_limit_hit
from apps.partners.webhooks.contracts import EventType, types_readable_with
from apps.partners.webhooks.selectors import event_filter_refusal, events_visible_to

BACKLOG_BATCH = 500


class _Refused(Exception):
    def __init__(self, response: HttpResponse) -> None:
        self.response = response


@dataclass(frozen=True, slots=True)
class StreamRequest:
    principal: Principal
    types: frozenset[str]
    employer_id: int | None
    after_position: int
    headers: dict[str, str]  # the rate limiter's (`RateLimit-*`), sent on the stream's response like any other


def _authenticate(request: HttpRequest) -> Principal:
    authentication_classes: list[Any] = list(api_settings.DEFAULT_AUTHENTICATION_CLASSES)
    for authentication_class in authentication_classes:
        result = authentication_class().authenticate(request)
        if result is not None and isinstance(result[0], Principal):
            return result[0]
    raise exceptions.NotAuthenticated()


def _open(request: HttpRequest) -> StreamRequest:
    """Authenticate, rate-limit and validate the request (sync: it reads the database). Raises `_Refused`."""
    try:
        principal = _authenticate(request)
    except exceptions.AuthenticationFailed as exc:
        headers = getattr(exc, "headers", None) or {"WWW-Authenticate": 'Api-Key, Bearer realm="keel"'}
        raise _Refused(problem_response(request, 401, str(exc.detail), headers=headers)) from None
    except exceptions.NotAuthenticated as exc:
        headers = {"WWW-Authenticate": 'Api-Key, Bearer realm="keel"'}
        raise _Refused(problem_response(request, 401, str(exc.detail), headers=headers)) from None
    decision = rate_limit_hit(key_prefix=principal.key_prefix, limits=principal.rate_limits)
    if not decision.allowed:
        detail = f"Rate limit exceeded; retry in {decision.retry_after} seconds."
        raise _Refused(problem_response(request, 429, detail, slug="rate-limited", headers=decision.headers))

    try:
        return _validate(request, principal, decision.headers)
    except _Refused as refused:
        for name, value in decision.headers.items():
            refused.response[name] = value
        raise


# long: every query parameter and header of the stream checked in order, each refusal naming its field.
def _validate(request: HttpRequest, principal: Principal, headers: dict[str, str]) -> StreamRequest:
    """The stream's parameters (`type`, `employer`, `Last-Event-ID`/`last_event_id`) checked for `principal`.
    Raises `_Refused` (422 naming the parameter, also one the stream does not take (ADR 0064); 403 for a type its
    scopes cannot read, 404 for an employer it may not see)."""
    unknown = [name for name in request.GET if name not in STREAM_QUERY_PARAMETERS]
    if unknown:
        raise _Refused(problem_invalid_field(request, unknown[0][:64], UNKNOWN_PARAMETER_MESSAGE))
    repeated = [name for name in request.GET if name != "type" and len(request.GET.getlist(name)) > 1]
    if repeated:
        repeated_message = "Give this parameter once: it takes a single value."
        raise _Refused(problem_invalid_field(request, repeated[0][:64], repeated_message))
    empty = [name for name in request.GET if any(not value.strip() for value in request.GET.getlist(name))]
    if empty:  # as the API's lists answer it (ADR 0064): never an unfiltered stream
        raise _Refused(problem_invalid_field(request, empty[0][:64], EMPTY_PARAMETER_MESSAGE))
    readable = set(types_readable_with(principal.scopes))
    listed = [t.strip() for value in request.GET.getlist("type") for t in value.split(",")]
    if not all(listed):  # `?type=,` or `a,,b`: an empty item is refused like an empty value, never "every type"
        raise _Refused(problem_invalid_field(request, "type", EMPTY_PARAMETER_MESSAGE))
    requested = set(listed)
    if requested - set(EventType.values):  # as the list answers an unknown type: the valid values, not the sent one
        raise _Refused(problem_invalid_field(request, "type", choices_message(EventType.values)))
    types = frozenset(requested or readable)

    employer_id = None
    raw_employer = request.GET.get("employer")
    if raw_employer is not None:
        if not (raw_employer.isascii() and raw_employer.isdigit()) or len(raw_employer) > 18 or int(raw_employer) < 1:
            raise _Refused(problem_invalid_field(request, "employer", "must be an employer id (a positive integer)"))
        employer_id = int(raw_employer)
    refusal = event_filter_refusal(principal, types=requested, employer_id=employer_id)
    if refusal is not None:
        raise _Refused(problem_response(request, refusal[0], refusal[1]))

    source, last_event_id = resume_id(request)
    if last_event_id:
        if message := control_character_error(last_event_id):  # a NUL would be a PostgreSQL error, not a miss
            raise _Refused(problem_invalid_field(request, source, message))
        event = events_visible_to(principal).filter(public_id=last_event_id).first()
        if event is None or event.position is None:
            raise _Refused(problem_invalid_field(request, source, "no event with this id is visible to this caller"))
        after = event.position
    else:
        top = events_visible_to(principal).order_by("-position").values_list("position", flat=True).first()
        after = 0 if top is None else int(top)
    return StreamRequest(
        principal=principal, types=types, employer_id=employer_id, after_position=after, headers=headers
    )


def _backlog(stream: StreamRequest, after: int) -> list[LiveEvent]:
    """Up to BACKLOG_BATCH visible events after `after`, in position order (sync: runs in a worker thread)."""
    try:
        qs = events_visible_to(stream.principal).filter(position__gt=after, type__in=sorted(stream.types))
        if stream.employer_id is not None:
            qs = qs.filter(employer_id=stream.employer_id)
        return [live_event_of(e) for e in qs.order_by("position")[:BACKLOG_BATCH]]
    finally:
        connection.close()  # worker threads are pooled: do not leave a connection per thread behind


def sse_frame(event: LiveEvent) -> bytes:
    """The partner's frame: `id`, `event`, `data` (the event JSON of `GET /api/v1/events`), built once per event."""
    return event.frame


def _principals_still_valid(key_prefixes: set[Hashable]) -> set[Hashable]:
    """Of the streams' principals (`Principal.key_prefix`: an API key's prefix, or `oauth:<client id>`), those
    whose credential still authenticates — not revoked, partner active, key not expired — asked of each configured
    DRF authentication class that has `principals_still_valid(key_prefixes)`, one query per door for every stream
    of the loop (the live credential sweep, apps/live/streaming.py; ADR 0067). Found through DRF's settings, like
    the doors themselves (the stream imports no door). A token's own expiry is the stream's `valid_until`."""
    prefixes = {str(k) for k in key_prefixes}
    valid: set[Hashable] = set()
    for authentication_class in api_settings.DEFAULT_AUTHENTICATION_CLASSES:
        still_valid = getattr(authentication_class, "principals_still_valid", None)
        if still_valid is not None:
            valid |= still_valid(prefixes)
    return valid


def _events(stream: StreamRequest) -> AsyncIterator[bytes]:
    principal = stream.principal
    employer_id = stream.employer_id
    return sse_body(
        partner_id=principal.partner_id,
        types=stream.types,
        employer_ids=None if principal.all_employers else principal.employer_ids,
        after_position=stream.after_position,
        replay=functools.partial(_backlog, stream),
        replay_batch=BACKLOG_BATCH,
        frame=sse_frame,
        keep=(lambda event: True) if employer_id is None else (lambda event: event.employer_id == employer_id),
        still_valid=(_principals_still_valid, principal.key_prefix),
        valid_until=principal.valid_until,
    )


@csrf_exempt  # an API address authenticated by header, not by cookie: no CSRF token applies (a POST is a 405)
def event_stream(request: HttpRequest) -> HttpResponseBase:
    """Open a stream (module docstring): 200 `text/event-stream` with the `RateLimit-*` headers, or problem+json
    401/403/404/422/429, or 405 with `Allow: GET` for another method.

    A sync view: the opening (authentication, rate limit, checks, the resume position) runs on the request's
    thread like any request, and the body — replay and live part, an async generator — runs on the event loop
    after the view has returned (ADR 0069, 0071). An async view here held a request thread while it awaited its
    opening on another thread: a burst of stream openings took every request thread (newcomer trial,
    2026-12-02)."""
    if request.method != "GET":
        refused = problem_response(request, 405, f"Method {(request.method or '')[:16]} is not allowed here; use GET.")
        refused["Allow"] = "GET"
        return refused
    try:
        stream = _open(request)
    except _Refused as refused:
        return refused.response
    response = sse_response(_events(stream), request)
    for name, value in stream.headers.items():
        response[name] = value
    return response
