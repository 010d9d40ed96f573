"""One process-wide reader of committed partner events, fanning them out to the open streams (ADR 0050).

The events table is the source of truth. A single daemon thread per process holds the cursor (the highest
commit-order `position` it has read) and, each time it wakes, reads the events positioned since, in position
order, and hands each to the subscribers that may see it (same partner, a requested type, an employer of the
caller). It wakes on PostgreSQL NOTIFY `keel_events_positioned` (sent by the sequencer when it positions events)
and, as a safety net, every `EVENT_STREAM_SAFETY_POLL_SECONDS` (2 s); without NOTIFY (the embedded SQLite
defaults, or a LISTEN connection that broke) it polls every `EVENT_STREAM_POLL_SECONDS` (0.25 s).

Steps of one wake-up:
1. read up to `BATCH` events with position > cursor, ordered by position (one indexed query), and serialise each
   once, here, into its SSE frame (`LiveEvent.frame`) — never once per client;
2. for each, in order, collect every subscriber of its partner, and every staff subscriber (`partner_id` None:
   the operators' cross-tenant feed, ADR 0055), whose filter admits it;
3. hand each event loop its whole share of the batch in one `call_soon_threadsafe` (one wake-up of that loop per
   batch, not one per event and client), then move the cursor to the last position read; repeat 1 while a full
   batch came back.
A subscriber whose queue is full (a client reading slower than events come) is marked `overflowed` and gets no
more events: its stream ends, and the client's reconnect with `Last-Event-ID` resumes from the table — an
event is never silently dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection

from apps.partners.webhooks.dispatch import event_payload
from apps.partners.webhooks.events import POSITIONED_CHANNEL
from apps.partners.webhooks.models import Event

log = logging.getLogger(__name__)

BATCH = 1000


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One positioned event as streams send it: `payload` is the same JSON object `GET /api/v1/events` lists;
    `data` is that object serialised once (compact JSON, UTF-8) and `frame` the whole SSE frame partners get."""

    position: int
    partner_id: int
    employer_id: int | None
    type: str
    payload: dict[str, Any]
    data: bytes
    frame: bytes

    @property
    def staff_frame(self) -> bytes:
        """The frame of the operators' feed: the partner's event JSON with `"partner": <partner id>` first
        (spliced into the serialised object, not serialised again)."""
        return _sse_frame(self.payload["id"], self.type, b'{"partner":%d,%s' % (self.partner_id, self.data[1:]))


@dataclass(eq=False, slots=True)
class Subscription:
    """One open stream's filter and queue. `partner_id` None = every partner (the staff feed, ADR 0055);
    `employer_ids` None = every employer."""

    partner_id: int | None
    types: frozenset[str]
    employer_ids: frozenset[int] | None
    loop: asyncio.AbstractEventLoop
    # None in the queue: "send a heartbeat" (put by the loop's heartbeat ticker, apps/live/streaming.py).
    queue: asyncio.Queue[LiveEvent | None] = field(
        default_factory=lambda: asyncio.Queue(settings.EVENT_STREAM_QUEUE_SIZE)
    )
    overflowed: bool = False
    last_sent: float = 0.0  # the loop's clock when the stream last sent anything
    # "Are this stream's credentials still good?" (sync; None: never asked), and what identifies them, so streams
    # opened with the same credentials are asked about once per sweep (apps/live/streaming.py, `_HeartbeatTicker`).
    authorised: Callable[[], bool] | None = None
    credential: Hashable = None
    # `(still_valid, key)`: the sweep asks `still_valid` once for the keys of every stream sharing it, and ends the
    # streams whose key is not in its answer (`apps.live.streaming.Validity`); None: not asked that way.
    still_valid: tuple[Callable[[set[Hashable]], set[Hashable]], Hashable] | None = None
    valid_until: float | None = None  # Unix seconds: the credential expires then, and so does the stream
    ended: bool = False  # a sweep found its credentials no longer authenticate: the stream ends, sending nothing

    def admits(self, event: LiveEvent) -> bool:
        if self.partner_id is not None and event.partner_id != self.partner_id:
            return False
        if event.type not in self.types:
            return False
        return self.employer_ids is None or event.employer_id is None or event.employer_id in self.employer_ids

    def offer(self, event: LiveEvent) -> None:
        """Called on the event loop's thread (via `call_soon_threadsafe`)."""
        if self.overflowed:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.overflowed = True


def _deliver(batch: list[tuple[Subscription, LiveEvent]]) -> None:
    """Run on one event loop's thread: offer that loop's share of a reader batch, in position order."""
    for subscription, event in batch:
        subscription.offer(event)


def live_event_of(event: Event) -> LiveEvent:
    """The stream form of a positioned `Event` row (its payload serialised once, for every stream)."""
    assert event.position is not None
    payload = event_payload(event)
    data = json.dumps(payload, separators=(",", ":"), default=str).encode()
    return LiveEvent(
        position=event.position,
        partner_id=event.partner_id,
        employer_id=event.employer_id,
        type=event.type,
        payload=payload,
        data=data,
        frame=_sse_frame(event.public_id, event.type, data),
    )


def _sse_frame(event_id: str, event_type: str, data: bytes) -> bytes:
    """One SSE frame: `id` (what the client sends back as `Last-Event-ID`), `event` (the type), `data` (JSON)."""
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id.encode(), event_type.encode(), data)


def events_after(after: int, *, limit: int) -> list[LiveEvent]:
    """Up to `limit` positioned events of every partner with position > `after`, in position order (the staff
    feed's replay, ADR 0055; partners replay through `events_visible_to`). Sync: reads the database."""
    return [live_event_of(e) for e in Event.objects.filter(position__gt=after).order_by("position")[:limit]]


def event_position(public_id: str) -> int | None:
    """The commit-order position of the event `public_id` of any partner, None if unknown or not positioned."""
    return Event.objects.filter(public_id=public_id).values_list("position", flat=True).first()


def newest_position() -> int:
    """The highest position of any event (0 for none): where a stream without `Last-Event-ID` starts."""
    top = Event.objects.filter(position__isnull=False).order_by("-position").values_list("position", flat=True)
    return int(top.first() or 0)


class EventHub:
    """The per-process reader (module docstring). `subscribe` starts its thread on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_partner: dict[int | None, set[Subscription]] = {}  # None: the staff subscribers
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self.cursor: int | None = None

    def subscribe(self, subscription: Subscription, *, from_position: int) -> None:
        """Add a stream. A reader not yet started begins at `from_position`, so an event committed between the
        stream reading its start position and this call is not skipped (the stream drops the overlap)."""
        with self._lock:
            if self.cursor is None:
                self.cursor = from_position
            self._by_partner.setdefault(subscription.partner_id, set()).add(subscription)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="keel-event-hub", daemon=True)
                self._thread.start()

    def unsubscribe(self, subscription: Subscription) -> None:
        with self._lock:
            subs = self._by_partner.get(subscription.partner_id)
            if subs is not None:
                subs.discard(subscription)
                if not subs:
                    del self._by_partner[subscription.partner_id]

    def subscriber_count(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._by_partner.values())

    def poke(self) -> None:
        """Wake the reader now (tests; the sequencer's NOTIFY does this across processes)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """End the reader thread and close its connections (tests; process exit does the same)."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    # --- the reader thread -------------------------------------------------------------------------------

    def _run(self) -> None:
        """Read, then wait; read again on a NOTIFY, a `poke`, or when the safety poll is due. With LISTEN the wait
        is in slices of `EVENT_STREAM_POLL_SECONDS` (a `poke` or `stop` is seen within one) but the table is
        queried only on a NOTIFY, a `poke` or every `EVENT_STREAM_SAFETY_POLL_SECONDS` — not a query per slice
        holding the GIL beside the event loop for nothing. Without LISTEN every slice reads."""
        listener = _Listener.open()
        due = True
        last_read = 0.0
        try:
            while not self._stopping.is_set():
                if due:
                    last_read = time.monotonic()
                    try:
                        self._read_new()
                    except Exception:  # the database is away: keep the thread, retry at the next wake
                        log.warning("event_hub.read_failed", exc_info=True)
                        close_old_connections()
                        connection.close()
                poll = float(settings.EVENT_STREAM_POLL_SECONDS)
                if listener is not None:
                    notified = listener.wait(poll)
                    if notified is None:
                        listener = None  # the LISTEN connection broke: poll from now on
                    safety = float(settings.EVENT_STREAM_SAFETY_POLL_SECONDS)
                    due = notified is not False or time.monotonic() - last_read >= safety
                else:
                    self._wake.wait(poll)
                    due = True
                due = due or self._wake.is_set()
                self._wake.clear()
        finally:
            if listener is not None:
                listener.close()
            connection.close()

    def _read_new(self) -> None:
        while True:
            with self._lock:
                cursor = self.cursor or 0
            rows = list(Event.objects.filter(position__gt=cursor).order_by("position")[:BATCH])
            self._fan_out(live_event_of(row) for row in rows)
            if rows:
                with self._lock:
                    self.cursor = rows[-1].position
            if len(rows) < BATCH:
                if connection.vendor == "sqlite":
                    # A long-lived SQLite connection in this thread kept reading an old snapshot under the ASGI
                    # server; a fresh one per poll is a file open, and SQLite only runs under `make run`.
                    connection.close()
                return

    def _fan_out(self, events: Iterable[LiveEvent]) -> None:
        """Steps 2 and 3 of the module docstring: group by event loop, one `call_soon_threadsafe` per loop."""
        with self._lock:
            by_partner = {key: list(subs) for key, subs in self._by_partner.items()}
        staff = by_partner.get(None, [])
        per_loop: dict[asyncio.AbstractEventLoop, list[tuple[Subscription, LiveEvent]]] = {}
        for event in events:
            for sub in (*by_partner.get(event.partner_id, ()), *staff):
                if sub.admits(event):
                    per_loop.setdefault(sub.loop, []).append((sub, event))
        for loop, batch in per_loop.items():
            # RuntimeError: that loop has closed; its streams unsubscribe as they end.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, batch)


class _Listener:
    """LISTEN for the sequencer's `keel_events_positioned` on a connection of its own (PostgreSQL only)."""

    def __init__(self, raw: Any) -> None:
        self._connection = raw

    @classmethod
    def open(cls) -> _Listener | None:
        if connection.vendor != "postgresql":
            return None
        import psycopg

        params = connection.get_connection_params()
        for name in ("cursor_factory", "context", "pool"):
            params.pop(name, None)
        try:
            raw = psycopg.connect(autocommit=True, **params)
            raw.execute(f"LISTEN {POSITIONED_CHANNEL}")
        except psycopg.Error:
            log.warning("event_hub.listen_failed; polling only", exc_info=True)
            return None
        return cls(raw)

    def wait(self, timeout: float) -> bool | None:
        """Block until a notification or `timeout`: True if notified, False if timed out, None if the connection
        broke (closed, then)."""
        notified = False
        try:
            for _ in self._connection.notifies(timeout=max(timeout, 0.0001), stop_after=1):
                notified = True
        except Exception:
            log.warning("event_hub.listen_lost; polling only", exc_info=True)
            self.close()
            return None
        return notified

    def close(self) -> None:
        with contextlib.suppress(Exception):  # already broken
            self._connection.close()


hub = EventHub()
