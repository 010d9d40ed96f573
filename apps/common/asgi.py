"""The ASGI application with a bound on request bodies (ADR 0065) and on the request target.

A request whose target — path plus query string — is longer than `MAX_REQUEST_TARGET_BYTES` is answered 414
before Django builds anything from it (problem+json under /api/, plain text elsewhere): uvicorn sets no such
bound, and a 100 KB query string reached the request log line (newcomer trial, 2026-12-02).

Django's `ASGIHandler.read_body` spools the whole body of every request — announced or chunked, any size — into a
`SpooledTemporaryFile` (memory, then disk) before any middleware runs, so `RequestSizeLimitMiddleware` alone
would refuse an oversized body only after it had been received in full; uvicorn sets no body limit either.
`BodyLimitASGIHandler` stops reading as the body passes its endpoint's limit (`body_limit`):

1. A declared `Content-Length` over the limit: nothing is read.
2. Otherwise the body's messages are counted as they arrive; the first that takes it past the limit ends it
   (Django sees an empty last message, so at most `limit` bytes were spooled) and nothing more is taken from
   the server (uvicorn stops reading the socket once its buffer holds 64 KiB).
3. Under /api/ the request then goes on to the middleware, which answers the RFC 9457 413 (the scope carries
   `BODY_OVER_LIMIT`); elsewhere (operator pages, the sandbox insurer), where the limit is Django's
   `DATA_UPLOAD_MAX_MEMORY_SIZE`, the handler answers a plain 413 itself, as Django does for a declared body over
   it. Either way the response says `Connection: close`, so the server closes the connection rather than read the
   rest of a body nobody wants.

A response that goes on for as long as its client listens (the live streams, ADR 0069) does not stay inside
Django's handler: the view puts the rest of its body in the request's `CONTINUATION` slot and lets Django send only
its first chunk; Django then finishes the request (middleware, request log, `request_finished`), and
`BodyLimitASGIHandler.__call__` sends the rest itself, ending it when the client goes away. Served inside Django,
every open stream kept Django's request, its two tasks and a thread of its own alive for its whole life, which the
garbage collector walked on every full collection.

Every request's middleware chain and view run in **one** hop, on one of the process's `WEB_REQUEST_THREADS`
request threads (ADR 0071): Django's async chain hopped between the event loop and a thread once per middleware
hook, and asgiref's `ThreadSensitiveContext` started a new thread for every request.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import SyncToAsync
from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.db import close_old_connections
from django.http import HttpResponse

from apps.common.middleware import API_PREFIX, BODY_OVER_LIMIT, body_limit

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]

_CLOSE = (b"connection", b"close")
_TOO_LARGE = b"413 Payload too large"
MAX_REQUEST_TARGET_BYTES = 8192  # path + "?" + query string; more than any documented operation needs
CONTINUATION = "keel.continuation"
"""Scope key: a list a view may put one async iterator of bytes in — the rest of its `text/event-stream` response,
sent after Django has finished the request (module docstring; `continuation_slot`)."""
_EVENT_STREAM = b"text/event-stream"

logger = logging.getLogger(__name__)


def continuation_slot(scope: Mapping[str, Any] | None) -> list[AsyncIterator[bytes]] | None:
    """The `CONTINUATION` list of a request's ASGI `scope` (`request.scope`), or None when the request is not served
    by `BodyLimitASGIHandler` (the test client, WSGI): then the view streams its whole body through Django."""
    slot = scope.get(CONTINUATION) if scope is not None else None
    return slot if isinstance(slot, list) else None


class _BoundedBody:
    """The server's `receive`, ending the body once it passes `limit` bytes (see the module docstring)."""

    def __init__(self, receive: Receive, *, limit: int | None, declared: int | None) -> None:
        self._receive = receive
        self.limit = limit
        self.received = 0
        self.over = limit is not None and declared is not None and declared > limit
        self._ended = False

    async def receive(self) -> Message:
        if self._ended:
            if self.over:
                # After the body Django only listens for the client going away, until its response is sent. The
                # rest of a body cut short is not taken from the server at all: this waits to be cancelled, and
                # the response closes the connection.
                await asyncio.Event().wait()
            return await self._receive()
        if self.over:
            self._ended = True
            return {"type": "http.request", "body": b"", "more_body": False}
        message = await self._receive()
        if message["type"] != "http.request":
            return message
        self.received += len(message.get("body", b""))
        if self.limit is not None and self.received > self.limit:
            self.over = True
            self._ended = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if not message.get("more_body", False):
            self._ended = True
        return message


def _limit_of(scope: Any) -> int | None:
    """The endpoint's body limit under /api/ (`body_limit`); elsewhere Django's `DATA_UPLOAD_MAX_MEMORY_SIZE`, the
    most `request.body` reads there under WSGI too (None: no limit, as Django's setting means)."""
    path = str(scope.get("path", ""))
    if _is_api(path):
        return body_limit(str(scope.get("method", "")), path)
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return None if limit is None else int(limit)


def _is_api(path: str) -> bool:
    """The paths `RequestSizeLimitMiddleware` bounds (and answers with problem+json)."""
    return path.startswith(API_PREFIX)


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The `Content-Length` a request announced, or None (absent or not a number: the middleware answers it)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitASGIHandler(ASGIHandler):
    """Django's ASGI handler reading at most the endpoint's body limit of any request, running the middleware
    chain and the view in **one** hop to the request's thread, and sending the rest of a live stream's body after
    Django is done with its request (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        # The chain in its sync form (ADR 0071): Django's async chain ran each hook of every sync-capable middleware
        # through its own `sync_to_async` hop, and our sync-only middleware back through `async_to_sync`.
        self.load_middleware(is_async=False)
        self._request_threads = ThreadPoolExecutor(
            max_workers=int(settings.WEB_REQUEST_THREADS), thread_name_prefix="keel-request"
        )
        self._run_request = SyncToAsync(
            self._get_response_pooled, thread_sensitive=False, executor=self._request_threads
        )

    async def get_response_async(self, request: Any) -> Any:
        """The whole sync chain — every middleware, the view, `log_response` — in **one** call on one of the
        process's `WEB_REQUEST_THREADS` request threads (ADR 0071). An async view (the live streams) is run on the
        event loop by Django's sync path (`async_to_sync`), its streaming response passed back untouched."""
        return await self._run_request(request)

    def _get_response_pooled(self, request: Any) -> Any:
        """`get_response` on a request thread, with the database connection handling Django's `request_started` /
        `request_finished` give a WSGI thread: an unusable or aged connection dropped before, the connection handed
        back to the pool after (those signals run elsewhere here: on asgiref's thread, not this one)."""
        close_old_connections()
        try:
            return self.get_response(request)
        finally:
            close_old_connections()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await super().__call__(scope, receive, send)  # Django refuses it
            return
        continuation: list[AsyncIterator[bytes]] = []
        scope[CONTINUATION] = continuation
        held = False  # Django's last body message held back: the response goes on
        event_stream = False

        async def send_holding(message: Mapping[str, Any]) -> None:
            nonlocal held, event_stream
            if message["type"] == "http.response.start":
                event_stream = any(
                    name.lower() == b"content-type" and value.startswith(_EVENT_STREAM)
                    for name, value in message.get("headers", [])
                )
            elif continuation and event_stream and not message.get("more_body", False):
                held = True
                if message.get("body"):
                    await send({**message, "more_body": True})
                return
            await send(message)

        # Not Django's `ThreadSensitiveContext`: it gave every request a thread of its own, started and joined per
        # request (ADR 0071); the chain runs on the request threads instead (`get_response_async`).
        await self.handle(scope, receive, send_holding)
        if continuation:
            await _send_continuation(continuation[0], receive, send, go_on=held)

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        if _target_length(scope) > MAX_REQUEST_TARGET_BYTES:
            await _send_uri_too_long(scope, send)
            return
        body = _BoundedBody(receive, limit=_limit_of(scope), declared=_declared_length(scope.get("headers", [])))

        async def receive_bounded() -> Message:
            message = await body.receive()
            if body.over:  # marked before Django builds the request from this scope (after the last message)
                scope[BODY_OVER_LIMIT] = True
            return message

        async def send_closing(message: Mapping[str, Any]) -> None:
            if body.over and message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != b"connection"]
                message = {**message, "headers": [*headers, _CLOSE]}
            await send(message)

        await super().handle(scope, receive_bounded, send_closing)

    def create_request(self, scope: Any, body_file: Any) -> tuple[Any, Any]:
        """Outside /api/ a body cut short is answered here, as Django answers a body over
        `DATA_UPLOAD_MAX_MEMORY_SIZE`; under /api/ `RequestSizeLimitMiddleware` answers it (problem+json)."""
        if scope.get(BODY_OVER_LIMIT) and not _is_api(str(scope.get("path", ""))):
            return None, HttpResponse(_TOO_LARGE, status=413, content_type="text/plain")
        return super().create_request(scope, body_file)


async def _send_continuation(
    body: AsyncIterator[bytes], receive: Receive, send: Callable[[Mapping[str, Any]], Awaitable[None]], *, go_on: bool
) -> None:
    """Send `body` as the rest of a response Django started (each chunk one body message, then the last one), until
    it ends or the client goes away — whichever is first ends the other. `go_on` False (Django did not finish the
    response: the client left, or another response replaced the stream's) only closes `body`."""
    if not go_on:
        await _aclose(body)
        return

    async def pump() -> None:
        async for chunk in body:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def until_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    loop = asyncio.get_running_loop()
    sending, listening = loop.create_task(pump()), loop.create_task(until_disconnect())
    try:
        await asyncio.wait((sending, listening), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (sending, listening):
            task.cancel()
        for outcome in await asyncio.gather(sending, listening, return_exceptions=True):
            if isinstance(outcome, Exception):
                logger.error("a streamed response failed", exc_info=outcome)
        await _aclose(body)


async def _aclose(body: AsyncIterator[bytes]) -> None:
    close = getattr(body, "aclose", None)
    if close is not None:
        await close()


def _target_length(scope: Any) -> int:
    """Bytes of the request target: the raw path (or the decoded one) plus the query string."""
    path = scope.get("raw_path") or str(scope.get("path", "")).encode()
    return len(path) + len(scope.get("query_string", b""))


async def _send_uri_too_long(scope: Any, send: Any) -> None:
    """414 with `Connection: close`: problem+json under /api/ (the path cut to 200 characters as `instance`),
    plain text elsewhere. Nothing of the request is read or logged beyond this answer."""
    path = str(scope.get("path", ""))
    if _is_api(path):
        content_type = b"application/problem+json"
        body = json.dumps(
            {
                "type": "https://keel.example/problems/uri-too-long",
                "title": "URI Too Long",
                "status": 414,
                "detail": f"The request target is longer than {MAX_REQUEST_TARGET_BYTES} bytes; "
                "send long values in a request body.",
                "instance": path[:200],
            }
        ).encode()
    else:
        content_type, body = b"text/plain", b"414 URI too long"
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), _CLOSE]
    await send({"type": "http.response.start", "status": 414, "headers": headers})
    await send({"type": "http.response.body", "body": body})
