"""The body of a live stream, shared by the partners' stream and the operators' staff feed (ADR 0050, 0055).

`sse_body` is an async generator of SSE bytes for one connection: subscribe to the process's reader, replay the
table after the resume position, then relay what the reader offers. It serialises nothing itself: each event
arrives with its frame already built once by the reader (`LiveEvent.frame`), and frames that arrive together
go out as one chunk, so a burst costs one socket write per client rather than one per event.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from asgiref.sync import sync_to_async
from django.conf import settings

from apps.live import hub as hub_module
from apps.live.hub import LiveEvent, Subscription

Replay = Callable[[int], list[LiveEvent]]
"""`replay(after)`: the next events visible to this stream with position > `after`, in position order, at most
`replay_batch` of them (sync: it runs in a worker thread and must close its own database connection)."""


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
) -> AsyncIterator[bytes]:
    """Yield the SSE bytes of one stream of `partner_id`'s events (None: every partner's) of `types`, of
    `employer_ids` (None: every employer):

    1. subscribe to the process's reader, from the loop that sends this response (the view itself may run on
       another one), before reading the table, so nothing committed from now on is missed;
    2. send the table's events after `after_position` (`replay`), in batches, until it has none left;
    3. send what the reader offers and `keep` admits, skipping anything at or before the last position sent
       (the reader and the table overlap) — every event already in the queue in one chunk — with a heartbeat
       comment whenever nothing came for `EVENT_STREAM_HEARTBEAT_SECONDS`. A subscription that overflowed
       ends the stream; the client resumes from the table with `Last-Event-ID`."""
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
        heartbeat = float(settings.EVENT_STREAM_HEARTBEAT_SECONDS)
        queue = subscription.queue
        while not subscription.overflowed:
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for wraps every get() in a new Task.
                async with asyncio.timeout(heartbeat):
                    first = await queue.get()
            except TimeoutError:
                yield b": heartbeat\n\n"
                continue
            chunk = []
            for event in (first, *(queue.get_nowait() for _ in range(queue.qsize()))):
                if event.position > last and keep(event):
                    chunk.append(frame(event))
                    last = event.position
            if chunk:
                yield b"".join(chunk)
    finally:
        hub.unsubscribe(subscription)
