"""`GET /ops/events/stream`: the operators' live feed — every partner's events as they are committed (ADR 0055).

Staff only, by the Django session the /ops/ dashboard already uses: an active staff user gets a
`text/event-stream` of every partner's events (each frame is the event JSON of `GET /api/v1/events` with
`"partner": <partner id>` first); anyone else gets problem+json 403. API credentials never open it: a request
carrying `Authorization` (an API key or a bearer token) is refused with 403 even beside a staff session, so a
partner's key can never reach another partner's events through this door, and partners keep their own stream
(`/api/v1/events/stream`, tenant-scoped). It is the partners' machinery — the process's reader in
`apps.live.hub` and `apps.live.streaming.sse_body` — with a subscription for every partner: one reader, one
serialisation per event. `Last-Event-ID` resumes after any event; without it the feed starts at the newest.

It needs the ASGI server (ADR 0050); under a WSGI server (the test live server) it answers 503 at once, and
the dashboard's script keeps polling instead.
"""

from __future__ import annotations

import functools

from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.base import SessionBase
from django.core.handlers.asgi import ASGIRequest
from django.db import connection
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.views.decorators.http import require_GET

from apps.common.errors import problem_invalid_field, problem_response
from apps.common.text import control_character_error
from apps.live.hub import LiveEvent, event_position, events_after, newest_position
from apps.live.streaming import resume_id, sse_body, sse_response
from apps.partners.webhooks.contracts import EventType

REPLAY_BATCH = 500


def _start_position(last_event_id: str) -> int | None:
    """Where the feed starts: after `last_event_id`'s position, or the newest; None for an unknown id."""
    return event_position(last_event_id) if last_event_id else newest_position()


def _replay(after: int) -> list[LiveEvent]:
    try:
        return events_after(after, limit=REPLAY_BATCH)
    finally:
        connection.close()


def _still_staff(user_pk: int, session: SessionBase) -> bool:
    """The feed's operator may still read it (sync): the session was not logged out or flushed, and the user is
    still active staff — so deactivating a user or signing them out ends their open feed too (the loop's
    credential sweep asks every `AUTH_RECHECK_SECONDS` and closes the connection, apps/live/streaming.py)."""
    if session.session_key is None or not session.exists(session.session_key):
        return False
    return get_user_model().objects.filter(pk=user_pk, is_active=True, is_staff=True).exists()


def _staff_frame(event: LiveEvent) -> bytes:
    return event.staff_frame


@require_GET
def ops_event_stream(request: HttpRequest) -> HttpResponseBase:
    """Open the staff feed (module docstring): 200 `text/event-stream`; problem+json 403 for API credentials,
    anonymous or non-staff callers; 422 for a bad or unknown `Last-Event-ID`; 503 outside the ASGI server. A sync
    view, as the partners' stream (apps/live/views.py): the opening on the request's thread, the body on the loop."""
    if request.headers.get("Authorization") is not None:
        detail = "The operators' feed takes a staff session; API keys and access tokens are refused here."
        return problem_response(request, 403, detail)
    user = request.user
    if not (user.is_authenticated and user.is_active and user.is_staff):
        return problem_response(request, 403, "The operators' feed is for signed-in staff only.")
    if not isinstance(request, ASGIRequest):
        return problem_response(request, 503, "The live feed is served by the ASGI server only (ADR 0050).")

    source, last_event_id = resume_id(request)
    message = control_character_error(last_event_id) if last_event_id else None
    after = None if message else _start_position(last_event_id)
    if after is None:
        return problem_invalid_field(request, source, message or "no event with this id")
    body = sse_body(
        partner_id=None,
        types=frozenset(EventType.values),
        employer_ids=None,
        after_position=after,
        replay=_replay,
        replay_batch=REPLAY_BATCH,
        frame=_staff_frame,
        authorised=functools.partial(_still_staff, user.pk, request.session),
        credential=(user.pk, request.session.session_key),
    )
    return sse_response(body, request)
