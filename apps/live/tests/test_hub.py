"""The reader's fan-out (ADR 0050): each event loop is woken once per batch with its whole share, in position
order; a partner's subscriptions get only that partner's events, a staff subscription (ADR 0055) every
partner's; the staff frame is the partner's JSON with the partner spliced in, not serialised again."""

from __future__ import annotations

import json
from typing import Any

from apps.live.hub import EventHub, LiveEvent, Subscription, _deliver

TYPE = "endorsement.received"


class RecordingLoop:
    """Stands in for an event loop: records what the reader thread hands it."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, tuple[Any, ...]]] = []

    def call_soon_threadsafe(self, callback: Any, *args: Any) -> None:
        self.calls.append((callback, args))


def live_event(position: int, partner_id: int, type: str = TYPE) -> LiveEvent:
    payload = {"id": f"evt_{position}", "type": type, "position": position, "employer": None, "data": {"n": "ü"}}
    data = json.dumps(payload, separators=(",", ":")).encode()
    frame = b"id: evt_%d\nevent: %s\ndata: %s\n\n" % (position, type.encode(), data)
    return LiveEvent(position, partner_id, None, type, payload, data, frame)


def subscription(loop: Any, partner_id: int | None, types: frozenset[str] = frozenset({TYPE})) -> Subscription:
    return Subscription(partner_id=partner_id, types=types, employer_ids=None, loop=loop)


def test_one_wake_up_per_loop_per_batch_with_each_subscribers_events_in_order():
    hub, loop, other_loop = EventHub(), RecordingLoop(), RecordingLoop()
    acme_1, acme_2 = subscription(loop, 1), subscription(loop, 1)
    other = subscription(other_loop, 2)
    staff = subscription(loop, None)
    acme_sent_only = subscription(other_loop, 1, frozenset({"endorsement.sent"}))
    for sub in (acme_1, acme_2, other, staff, acme_sent_only):
        # As `subscribe` files them, without starting the reader thread (`_fan_out` is called directly here).
        hub._by_partner.setdefault(sub.partner_id, set()).add(sub)
    events = [live_event(1, 1), live_event(2, 2), live_event(3, 1)]

    hub._fan_out(iter(events))

    assert len(loop.calls) == 1
    assert len(other_loop.calls) == 1
    callback, (batch,) = loop.calls[0]
    assert callback is _deliver
    assert len(batch) == 7  # acme_1, acme_2: events 1 and 3; staff: 1, 2, 3; nothing for acme_sent_only
    per_sub = {sub: [e.position for s, e in batch if s is sub] for sub in (acme_1, acme_2, staff)}
    assert per_sub == {acme_1: [1, 3], acme_2: [1, 3], staff: [1, 2, 3]}
    assert [e.position for _, e in batch] == sorted(e.position for _, e in batch)
    _, (other_batch,) = other_loop.calls[0]
    assert [(s, e.position) for s, e in other_batch] == [(other, 2)]

    _deliver(batch)
    assert [acme_1.queue.get_nowait().position for _ in range(acme_1.queue.qsize())] == [1, 3]
    assert [staff.queue.get_nowait().position for _ in range(staff.queue.qsize())] == [1, 2, 3]


def test_a_full_queue_marks_the_subscription_overflowed_and_it_gets_nothing_more(settings):
    settings.EVENT_STREAM_QUEUE_SIZE = 2
    sub = subscription(RecordingLoop(), 1)

    _deliver([(sub, live_event(n, 1)) for n in (1, 2, 3, 4)])

    assert sub.overflowed is True
    assert [sub.queue.get_nowait().position for _ in range(sub.queue.qsize())] == [1, 2]


def test_the_staff_frame_is_the_partners_json_with_the_partner_first():
    event = live_event(7, 42)

    frame = event.staff_frame

    head, data = frame.decode().split("data: ")
    assert head == f"id: evt_7\nevent: {TYPE}\n"
    assert data.endswith("\n\n")
    parsed = json.loads(data)
    assert next(iter(parsed)) == "partner"
    assert parsed == {"partner": 42, **event.payload}
