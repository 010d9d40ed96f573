"""The body of a live stream, shared by the partners' stream and the operators' staff feed (ADR 0050, 0055).

`sse_body` is an async generator of SSE bytes for one connection: subscribe to the process's reader, replay the
table after the resume position, then relay what the reader offers. It serialises nothing itself: each event
arrives with its frame already built once by the reader (`LiveEvent.frame`), and frames that arrive together
go out as one chunk, so a burst costs one socket write per client rather than one per event.

Heartbeats come from **one ticker per event loop**, not a timer per connection: once a second (at most) it puts
a heartbeat marker in the queue of every stream that has sent nothing for `EVENT_STREAM_HEARTBEAT_SECONDS`.
Per-connection timers woke the loop at random phases — 500 idle streams at 15 s made ~33 wake-ups a second, each
one taking the GIL from the thread serving an API request; the ticker makes one a second (bench:
`bench/live_stream.py`, API p99 with and without 500 idle streams).

The same ticker ends streams whose credentials stopped authenticating (a revoked API key or OAuth client, an
expired key or token, an inactive partner; for the staff feed a deactivated, de-staffed or signed-out operator).
Every `AUTH_RECHECK_SECONDS` it sweeps, in one worker thread and **off the send path** — a stream never waits on
that check before it sends (asking before every send cost the stream's p99 14× the relay's; `docs/benchmarks.md`):

- a stream past its credential's `valid_until` (a token's `exp`, a key's expiry) ends by the clock, no query;
- partners' streams are asked **by kind**: one `still_valid(keys)` call per door for every stream of the loop —
  one query that builds no model, reading the database itself, so a revocation counts within one sweep
  (ADR 0067). Re-authenticating each stream's credential instead cost 30–250 ms of interpreter time per sweep
  with 500 streams, once a second, and the objects it made drove full garbage collections of 100–230 ms: the
  API's p99 doubled beside 500 idle streams (`bench/live_stream.py`, 2026-12-02);
- the staff feed's few operators are asked one `authorised()` per distinct credential.

A stream found unauthorised ends without sending anything more; its client's reconnect meets the 401. A check
that fails (the database away) is not a revocation: the stream goes on and the next sweep asks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable, Hashable

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, StreamingHttpResponse

from apps.common.asgi import continuation_slot
from apps.live import hub as hub_module
from apps.live.hub import LiveEvent, Subscription

MAX_EVENT_ID_LENGTH = 40  # longer than any event's public id
AUTH_RECHECK_SECONDS = 1.0  # how often a loop's ticker asks its live streams' credentials again (module docstring)

logger = logging.getLogger(__name__)
wall_clock = time.time  # Unix seconds, compared with `valid_until` (a name of its own, so a test can move it)


def resume_id(request: HttpRequest) -> tuple[str, str]:
    """Where a stream resumes: `(field, event id)` — the `Last-Event-ID` header (what EventSource sends on a
    reconnect) or else the `last_event_id` query parameter, cut to `MAX_EVENT_ID_LENGTH`, with the name of the
    one used (a 422 names it); `("last_event_id", "")` when neither is given."""
    header = request.headers.get("Last-Event-ID")
    if header:
        return "Last-Event-ID", header[:MAX_EVENT_ID_LENGTH]
    return "last_event_id", (request.GET.get("last_event_id") or "")[:MAX_EVENT_ID_LENGTH]


def sse_response(body: AsyncIterator[bytes], request: HttpRequest | None = None) -> StreamingHttpResponse:
    """`body` (an `sse_body`) as a `text/event-stream` response that neither caches nor proxies buffer (nginx).

    Served by Keel's ASGI handler (`request.scope` has its `CONTINUATION` slot), Django sends only the body's first
    chunk — the stream has subscribed by then — and the handler sends the rest after Django has finished the
    request, so an open stream holds no Django request, task or thread (ADR 0069). Elsewhere (the test client) the
    whole body streams through Django."""
    slot = continuation_slot(getattr(request, "scope", None))
    if slot is not None:
        slot.append(body)
        body = _first_chunk(body)
    response = StreamingHttpResponse(body, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def _first_chunk(body: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The first chunk of `body`, leaving `body` open for the rest (it has no `close`: Django will not close it)."""
    yield await anext(body)


Validity = tuple[Callable[[set[Hashable]], set[Hashable]], Hashable]
"""`(still_valid, key)`: the sweep calls `still_valid(keys)` once with the keys of every stream sharing it (sync,
in a worker thread); a stream whose key is not in the answer ends. A call that raises ends nothing."""

Replay = Callable[[int], list[LiveEvent]]
"""`replay(after)`: the next events visible to this stream with position > `after`, in position order, at most
`replay_batch` of them (sync: it runs in a worker thread and must close its own database connection)."""


# long: one async generator (replay, then live, heartbeats, overflow) whose state lives across yields; its
# keyword parameters and docstring are a third of it.
async def sse_body(
    *,
    partner_id: int | None,
    types: frozenset[str],
    employer_ids: frozenset[int] | None,
    after_position: int,
    replay: Replay,
    replay_batch: int,
    frame: Callable[[LiveEvent], bytes],
    keep: Callable[[LiveEvent], bool] = lambda event: True,
    authorised: Callable[[], bool] | None = None,
    credential: Hashable = None,
    still_valid: Validity | None = None,
    valid_until: float | None = None,
) -> AsyncIterator[bytes]:
    """Yield the SSE bytes of one stream of `partner_id`'s events (None: every partner's) of `types`, of
    `employer_ids` (None: every employer):

    1. subscribe to the process's reader, from the loop that sends this response (the view itself may run on
       another one), before reading the table, so nothing committed from now on is missed;
    2. send the table's events after `after_position` (`replay`), in batches, until it has none left;
    3. send what the reader offers and `keep` admits, skipping anything at or before the last position sent
       (the reader and the table overlap) — every event already in the queue in one chunk — and a heartbeat
       comment when the loop's ticker finds it idle for `EVENT_STREAM_HEARTBEAT_SECONDS`. A subscription that
       overflowed ends the stream; the client resumes from the table with `Last-Event-ID`.
    4. the loop's ticker re-checks the credentials every `AUTH_RECHECK_SECONDS`, off the send path (module
       docstring): `still_valid` (`(still_valid, key)`, a `Validity`: one call for the keys of every stream
       sharing it, e.g. one query for 500 API keys), or else `authorised()` (sync: the caller's credentials still
       valid), asked once per distinct `credential`; and the clock against `valid_until` (Unix seconds). On no,
       the stream ends without sending anything more, and the client's reconnect meets the 401."""
    hub = hub_module.hub
    subscription = Subscription(
        partner_id=partner_id,
        types=types,
        employer_ids=employer_ids,
        loop=asyncio.get_running_loop(),
        authorised=authorised,
        credential=credential,
        still_valid=still_valid,
        valid_until=valid_until,
    )
    hub.subscribe(subscription, from_position=after_position)
    try:
        yield b"retry: 2000\n: connected\n\n"  # the client sees the stream open before any replay
        last = after_position
        while True:
            batch = await sync_to_async(replay, thread_sensitive=False)(last)
            if batch:
                yield b"".join(frame(event) for event in batch)
                last = batch[-1].position
            if len(batch) < replay_batch:
                break
        yield b": live\n\n"  # caught up with the table; from here on, events as they are committed
        loop = asyncio.get_running_loop()
        subscription.last_sent = loop.time()
        ticker = _ticker_of(loop)
        ticker.add(subscription)
        queue = subscription.queue
        try:
            while not (subscription.overflowed or subscription.ended):
                first = await queue.get()
                chunk, heartbeat_due = [], False
                for item in (first, *(queue.get_nowait() for _ in range(queue.qsize()))):
                    if item is None:
                        heartbeat_due = True
                    elif item.position > last and keep(item):
                        chunk.append(frame(item))
                        last = item.position
                if subscription.ended:
                    return
                if not (chunk or heartbeat_due):
                    continue
                yield b"".join(chunk) if chunk else b": heartbeat\n\n"
                subscription.last_sent = loop.time()
        finally:
            ticker.discard(subscription)
    finally:
        hub.unsubscribe(subscription)


class _HeartbeatTicker:
    """One event loop's heartbeats (module docstring). Runs while the loop has live streams; restarts on the
    next one after they are all gone."""

    def __init__(self) -> None:
        self.streams: set[Subscription] = set()
        self.task: asyncio.Task[None] | None = None
        self.sweep: asyncio.Task[None] | None = None  # the credential check in flight, if any
        self.swept_at = 0.0

    def add(self, subscription: Subscription) -> None:
        self.streams.add(subscription)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, subscription: Subscription) -> None:
        self.streams.discard(subscription)

    async def _run(self) -> None:
        """Every tick (1 s, or the heartbeat or recheck interval if shorter): 1. for each live stream idle for the
        heartbeat interval with nothing queued, queue a heartbeat marker and count it as sent, so the next one is
        an interval later; 2. every `AUTH_RECHECK_SECONDS`, start a credential sweep unless one is in flight;
        3. stop once the loop has no live stream."""
        loop = asyncio.get_running_loop()
        while self.streams:
            heartbeat = float(settings.EVENT_STREAM_HEARTBEAT_SECONDS)
            await asyncio.sleep(min(1.0, heartbeat, AUTH_RECHECK_SECONDS))
            now = loop.time()
            for subscription in list(self.streams):
                if now - subscription.last_sent >= heartbeat and subscription.queue.empty():
                    subscription.last_sent = now
                    subscription.queue.put_nowait(None)
            if now - self.swept_at >= AUTH_RECHECK_SECONDS and (self.sweep is None or self.sweep.done()):
                self.swept_at = now
                self.sweep = loop.create_task(self._sweep())

    async def _sweep(self) -> None:
        """Re-check the credentials of the live streams (module docstring) and end every stream refused: mark it
        ended and wake it (a heartbeat marker; a full queue wakes it anyway). By the clock first (`valid_until`),
        then, in one worker thread (`_ask`), each `still_valid` once for its streams' keys and each distinct
        `authorised` credential once."""
        now = wall_clock()
        asked = [s for s in self.streams if not s.ended]
        expired = {id(s) for s in asked if s.valid_until is not None and now > s.valid_until}
        current = [s for s in asked if id(s) not in expired]
        checks = {s.credential: s.authorised for s in current if s.authorised is not None and s.still_valid is None}
        kinds: dict[Callable[[set[Hashable]], set[Hashable]], set[Hashable]] = {}
        for subscription in current:
            if subscription.still_valid is not None:
                still_valid, key = subscription.still_valid
                kinds.setdefault(still_valid, set()).add(key)
        refused: set[Hashable] = set()
        valid: dict[Callable[[set[Hashable]], set[Hashable]], set[Hashable]] = {}
        if checks or kinds:
            refused, valid = await sync_to_async(_ask, thread_sensitive=False)(checks, kinds)
        # Only the streams asked about: one that opened while the sweep was away is judged by the next sweep.
        for subscription in asked:
            if id(subscription) in expired or _is_refused(subscription, refused, valid):
                subscription.ended = True
                with contextlib.suppress(asyncio.QueueFull):
                    subscription.queue.put_nowait(None)


def _is_refused(
    subscription: Subscription,
    refused: set[Hashable],
    valid: dict[Callable[[set[Hashable]], set[Hashable]], set[Hashable]],
) -> bool:
    """Whether a sweep's answers (`_ask`) refuse this stream; a kind that was not answered refuses nothing."""
    if subscription.still_valid is not None:
        still_valid, key = subscription.still_valid
        return still_valid in valid and key not in valid[still_valid]
    return subscription.authorised is not None and subscription.credential in refused


def _ask(
    checks: dict[Hashable, Callable[[], bool]],
    kinds: dict[Callable[[set[Hashable]], set[Hashable]], set[Hashable]] | None = None,
) -> tuple[set[Hashable], dict[Callable[[set[Hashable]], set[Hashable]], set[Hashable]]]:
    """`(refused credentials, {still_valid: the keys it found valid})`: each `still_valid` of `kinds` asked once
    with its keys, then each check of `checks` (sync, one worker thread; its database connection is closed at the
    end — worker threads are pooled). A call that raises is logged and answers nothing (left out of the result):
    a database blip must not cut every stream (the next sweep asks again)."""
    refused: set[Hashable] = set()
    valid: dict[Callable[[set[Hashable]], set[Hashable]], set[Hashable]] = {}
    try:
        for still_valid, keys in (kinds or {}).items():
            try:
                valid[still_valid] = still_valid(keys)
            except Exception:
                logger.warning("live stream credential check failed; the streams go on", exc_info=True)
        for credential, authorised in checks.items():
            try:
                if not authorised():
                    refused.add(credential)
            except Exception:
                logger.warning("live stream credential check failed; the stream goes on", exc_info=True)
    finally:
        connection.close()
    return refused, valid


_tickers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _HeartbeatTicker] = weakref.WeakKeyDictionary()


def _ticker_of(loop: asyncio.AbstractEventLoop) -> _HeartbeatTicker:
    """The heartbeat ticker of `loop` (made on first use; called on that loop's thread)."""
    ticker = _tickers.get(loop)
    if ticker is None:
        ticker = _tickers[loop] = _HeartbeatTicker()
    return ticker
