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
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Callable

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import HttpRequest, StreamingHttpResponse

from apps.live import hub as hub_module
from apps.live.hub import LiveEvent, Subscription

MAX_EVENT_ID_LENGTH = 40  # longer than any event's public id
AUTH_RECHECK_SECONDS = 1.0  # how stale a stream's "still authorised" may be before it sends (`sse_body`, step 4)


def resume_id(request: HttpRequest) -> tuple[str, str]:
    """Where a stream resumes: `(field, event id)` — the `Last-Event-ID` header (what EventSource sends on a
    reconnect) or else the `last_event_id` query parameter, cut to `MAX_EVENT_ID_LENGTH`, with the name of the
    one used (a 422 names it); `("last_event_id", "")` when neither is given."""
    header = request.headers.get("Last-Event-ID")
    if header:
        return "Last-Event-ID", header[:MAX_EVENT_ID_LENGTH]
    return "last_event_id", (request.GET.get("last_event_id") or "")[:MAX_EVENT_ID_LENGTH]


def sse_response(body: AsyncIterator[bytes]) -> StreamingHttpResponse:
    """`body` (an `sse_body`) as a `text/event-stream` response that neither caches nor proxies buffer (nginx)."""
    response = StreamingHttpResponse(body, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


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
    4. `authorised()` (sync, run in a worker thread: the caller's credentials still valid — not revoked, not
       expired) is asked again before anything is sent once `AUTH_RECHECK_SECONDS` have passed since it last
       said yes; on no, the stream ends without sending, and the client's reconnect meets the 401. With the
       principal cache's 5 s bound (ADR 0054), a revoked key or client gets no event later than that."""
    hub = hub_module.hub
    subscription = Subscription(
        partner_id=partner_id, types=types, employer_ids=employer_ids, loop=asyncio.get_running_loop()
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
        subscription.last_sent = checked_at = loop.time()
        ticker = _ticker_of(loop)
        ticker.add(subscription)
        queue = subscription.queue
        try:
            while not subscription.overflowed:
                first = await queue.get()
                chunk, heartbeat_due = [], False
                for item in (first, *(queue.get_nowait() for _ in range(queue.qsize()))):
                    if item is None:
                        heartbeat_due = True
                    elif item.position > last and keep(item):
                        chunk.append(frame(item))
                        last = item.position
                if not (chunk or heartbeat_due):
                    continue
                if authorised is not None and loop.time() - checked_at >= AUTH_RECHECK_SECONDS:
                    if not await sync_to_async(authorised, thread_sensitive=False)():
                        return
                    checked_at = loop.time()
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

    def add(self, subscription: Subscription) -> None:
        self.streams.add(subscription)
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run())

    def discard(self, subscription: Subscription) -> None:
        self.streams.discard(subscription)

    async def _run(self) -> None:
        """Every tick (1 s, or the heartbeat interval if shorter): 1. for each live stream idle for the heartbeat
        interval with nothing queued, 2. queue a heartbeat marker and count it as sent, so the next one is an
        interval later; 3. stop once the loop has no live stream."""
        loop = asyncio.get_running_loop()
        while self.streams:
            heartbeat = float(settings.EVENT_STREAM_HEARTBEAT_SECONDS)
            await asyncio.sleep(min(1.0, heartbeat))
            now = loop.time()
            for subscription in list(self.streams):
                if now - subscription.last_sent >= heartbeat and subscription.queue.empty():
                    subscription.last_sent = now
                    subscription.queue.put_nowait(None)


_tickers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _HeartbeatTicker] = weakref.WeakKeyDictionary()


def _ticker_of(loop: asyncio.AbstractEventLoop) -> _HeartbeatTicker:
    """The heartbeat ticker of `loop` (made on first use; called on that loop's thread)."""
    ticker = _tickers.get(loop)
    if ticker is None:
        ticker = _tickers[loop] = _HeartbeatTicker()
    return ticker
