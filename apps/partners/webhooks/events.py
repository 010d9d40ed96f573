"""Recording partner events (in the producer's transaction) and putting them in commit order (after commit).

1. `partner_events_record(drafts)` — called by the service that makes a change, inside its transaction:
   numbers each object's events (`EventSequence` upsert) and inserts the `Event` rows (position null). The
   `Event` table is the transactional outbox of partner events: a row exists if and only if its change
   committed, and nothing leaves Keel before that. A statement trigger queues `NOTIFY keel_events` at commit
   (PostgreSQL) and an on-commit nudge queues a `webhooks.dispatch` task; beat runs one every second anyway.
2. `events_sequence()` — run by every dispatcher pass (`dispatch.dispatch_once` / `dispatch_forever`, the
   `webhooks.dispatch` task): under one transaction-scoped lock it gives every committed, unpositioned event
   the next positions in insert order, and creates one `WebhookDelivery` per subscribed active endpoint, in the
   same transaction. Positions therefore commit in increasing order (the lock is held until commit): a reader
   that has seen position N has seen every position below N (SPEC §10, ADR 0030).
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction
from django.db.models import Max
from django.utils import timezone

from apps.common import bulk
from apps.outbox.services import OutboxError
from apps.partners.ownership import employer_partners
from apps.partners.webhooks.contracts import EventDraft, EventType
from apps.partners.webhooks.models import DeliveryStatus, Event, EventSequence, WebhookDelivery, WebhookEndpoint
from apps.partners.webhooks.plans import PLAN_FOR_VALUES

log = logging.getLogger(__name__)

# pg_advisory_xact_lock key of the sequencer ("keel-seq" as a number).
SEQUENCER_LOCK = 0x6B65656C2D736571
NOTIFY_CHANNEL = "keel_webhooks"  # the sequencer created deliveries
# Sent by `events_sequence` when it has positioned events: wakes the live streams' readers (apps/live/hub.py).
POSITIONED_CHANNEL = "keel_events_positioned"
EVENTS_CHANNEL = "keel_events"  # a transaction that wrote events committed (trigger, migration 0002)
SEQUENCE_BATCH = 2000
# A pass that creates more deliveries than this hands none over (a backlog: the runs query in batches anyway).
HAND_OVER_MAX = 1000


class UnknownEventType(ValueError):
    pass


_KNOWN_TYPES = frozenset(EventType.values)  # once: the enum property builds a new list per call


def partner_events_record(drafts: Sequence[EventDraft]) -> list[Event]:
    """Write `drafts` as `Event` rows in the caller's transaction; returns them (ids and sequences set).

    Must run inside the transaction of the change (raises `OutboxError` otherwise). Raises `UnknownEventType`
    for a type not in `EventType`. Cost: one upsert per distinct object and one bulk insert, whatever the
    number of drafts.
    """
    if not drafts:
        return []
    for draft in drafts:
        if draft.type not in _KNOWN_TYPES:
            raise UnknownEventType(draft.type)
    if not connection.in_atomic_block:
        raise OutboxError("partner_events_record must be called inside the transaction of the change")
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for draft in drafts:
        counts[(draft.object_type, str(draft.object_id))] += 1
    partner_of = employer_partners({d.employer_id for d in drafts if d.partner_id is None and d.employer_id})
    last = _sequence_take(counts)
    next_of = {obj: last[obj] - n + 1 for obj, n in counts.items()}
    now = timezone.now()
    rows: list[Event] = []
    for draft in drafts:
        obj = (draft.object_type, str(draft.object_id))
        rows.append(
            Event(
                partner_id=draft.partner_id if draft.partner_id is not None else partner_of[draft.employer_id or 0],
                employer_id=draft.employer_id,
                type=draft.type,
                object_type=draft.object_type,
                object_id=str(draft.object_id),
                sequence=next_of[obj],
                data=draft.data,
                created_at=now,
            )
        )
        next_of[obj] += 1
    bulk.copy_create(rows)  # COPY when many (a 10,000-row file's transitions)
    if not any(entry[1] is _nudge_dispatcher for entry in connection.run_on_commit):
        transaction.on_commit(_nudge_dispatcher)  # one nudge per transaction, dropped with a rollback
    return rows


def _sequence_take(counts: dict[tuple[str, str], int]) -> dict[tuple[str, str], int]:
    """Add `counts` to each object's counter and return the new `last` per object (one statement).

    `INSERT … ON CONFLICT DO UPDATE … RETURNING` (PostgreSQL and SQLite ≥ 3.35): the conflicting row is locked
    until the caller commits, so two transactions recording events of one object are serialised and their
    sequences never collide.
    """
    table = EventSequence._meta.db_table
    items = sorted(counts.items())
    params: list[Any] = [timezone.now()]
    if connection.vendor == "postgresql":
        # Three array parameters instead of three per object (a 10,000-row result file names 10,000 objects).
        rows = (
            "SELECT t, i, n, %s::timestamptz FROM unnest(%b::text[], %b::text[], %b::int[]) "
            "WITH ORDINALITY AS v(t, i, n, o) ORDER BY o"
        )
        params += [[t for (t, _), _ in items], [i for (_, i), _ in items], [n for _, n in items]]
    else:
        now = params.pop()
        rows = "VALUES " + ", ".join(["(%s, %s, %s, %s)"] * len(items))
        for (object_type, object_id), n in items:
            params += [object_type, object_id, n, now]
    sql = (
        f"INSERT INTO {table} (object_type, object_id, last, updated_at) {rows} "
        f"ON CONFLICT (object_type, object_id) DO UPDATE SET last = {table}.last + excluded.last, "
        "updated_at = excluded.updated_at RETURNING object_type, object_id, last"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {(r[0], r[1]): int(r[2]) for r in cursor.fetchall()}


# Steps 2–4 of `events_sequence` in one statement (PostgreSQL): positions, the deliveries of the positioned
# events to every subscribed active endpoint (the same rule as `endpoint_wants`, in SQL: partner, a subscribed
# type — `event_types ? type` on the jsonb list — and the employer binding), in position order so one object's
# deliveries to one endpoint get increasing ids, and the NOTIFYs, queued for commit. One round trip instead of
# one per step: at a steady trickle the dispatcher loop runs this for every committed transaction (ADR 0052).
_SEQUENCE_SQL = """
WITH todo AS (
    SELECT id, row_number() OVER (ORDER BY id) AS rn FROM partners_event
    WHERE position IS NULL ORDER BY id LIMIT %(limit)s
), base AS (SELECT COALESCE(MAX(position), 0) AS top FROM partners_event),
positioned AS (
    UPDATE partners_event e SET position = base.top + todo.rn, positioned_at = %(now)s
    FROM todo, base WHERE e.id = todo.id
    RETURNING e.id, e.public_id, e.position, e.partner_id, e.employer_id, e.type, e.object_type, e.object_id,
        e.sequence, e.data, e.created_at
), fanned AS (
    INSERT INTO partners_webhookdelivery
        (endpoint_id, event_id, order_key, status, attempts, next_attempt_at, created_at, last_error)
    SELECT ep.id, p.id, p.object_type || ':' || p.object_id, %(pending)s, 0, %(now)s, %(now)s, ''
    FROM positioned p JOIN partners_webhookendpoint ep ON ep.partner_id = p.partner_id AND ep.is_active
    WHERE ep.event_types ? p.type
      AND (ep.employer_ids IS NULL OR jsonb_typeof(ep.employer_ids) = 'null' OR p.employer_id IS NULL
           OR ep.employer_ids @> to_jsonb(p.employer_id))
    ORDER BY p.position, ep.id
    RETURNING id, endpoint_id, event_id, order_key, created_at
), counted AS (
    SELECT (SELECT count(*) FROM positioned) AS events, ARRAY(SELECT DISTINCT endpoint_id FROM fanned) AS endpoints
)
SELECT events, endpoints,
       CASE WHEN events > 0 THEN pg_notify(%(positioned_channel)s, '') END,
       CASE WHEN cardinality(endpoints) > 0 THEN pg_notify(%(webhooks_channel)s, '') END,
       (SELECT json_agg(json_build_object(
            'id', f.id, 'endpoint_id', f.endpoint_id, 'url', ep.url, 'order_key', f.order_key,
            'created_at', f.created_at, 'event_id', p.id, 'public_id', p.public_id, 'partner_id', p.partner_id,
            'employer_id', p.employer_id, 'type', p.type, 'object_type', p.object_type, 'object_id', p.object_id,
            'sequence', p.sequence, 'data', p.data, 'event_created_at', p.created_at, 'position', p.position,
            -- fresh: no earlier pending delivery of the object to the endpoint (this snapshot holds none of the
            -- rows the CTE inserted, so any pending row it sees is an earlier one)
            'fresh', NOT EXISTS (
                SELECT 1 FROM partners_webhookdelivery x
                WHERE x.endpoint_id = f.endpoint_id AND x.order_key = f.order_key AND x.status = %(pending)s)
        ) ORDER BY f.id)
        FROM fanned f JOIN positioned p ON p.id = f.event_id JOIN partners_webhookendpoint ep ON ep.id = f.endpoint_id
        WHERE (SELECT count(*) FROM fanned) <= %(hand_over_max)s)
FROM counted
"""


def events_sequence(*, limit: int = SEQUENCE_BATCH) -> int:
    """Give committed events their commit-order positions and fan them out; returns how many events.

    Steps, in one short transaction:
    1. Take the sequencer lock (PostgreSQL: `pg_advisory_xact_lock`; SQLite has one writer anyway). Another
       sequencer waits here and then sees this one's positions.
    2. Number every visible unpositioned event after the highest position, in insert-id order.
       Events of one object were inserted in the order they happened (their recorders were serialised by the
       object's row locks and `EventSequence`), so their positions keep that order.
    3. Create the deliveries of those events to every active endpoint subscribed to them (partner, type,
       employer binding), in position order — which is the order the dispatcher sends one object's events.
    4. At commit, wake the live streams and other idle dispatcher processes (PostgreSQL NOTIFY
       `keel_events_positioned`, `keel_webhooks`).
    On PostgreSQL steps 2–4 are one statement (`_SEQUENCE_SQL`); the lock is its own statement first, so the
    statement's snapshot is taken after the previous sequencer committed. The transaction plans its statements
    and foreign-key checks for their values (`plans.PLAN_FOR_VALUES`, ADR 0059).
    """
    return sequence_and_fan_out(limit=limit).events


@dataclass(frozen=True, slots=True)
class Sequenced:
    """What one sequencer pass did: `events` positioned; `endpoint_ids` that got deliveries; `fresh`, the new
    deliveries (PostgreSQL), each with its event, that were the first pending delivery of their object to their
    endpoint when created — sendable at once, in id order; `fresh_urls`, those endpoints' URLs in the same
    snapshot; `held_endpoint_ids`, endpoints that also got a delivery queued behind an earlier one."""

    events: int
    endpoint_ids: frozenset[int] = frozenset()
    fresh: tuple[WebhookDelivery, ...] = ()
    fresh_urls: dict[int, str] = field(default_factory=dict)
    held_endpoint_ids: frozenset[int] = frozenset()


def _sequenced(events: int, endpoint_ids: list[int] | None, raw: Any) -> Sequenced:
    rows: list[dict[str, Any]] = json.loads(raw) if isinstance(raw, str) else (raw or [])
    fresh: list[WebhookDelivery] = []
    urls: dict[int, str] = {}
    held: set[int] = set()
    events_by_id: dict[int, Event] = {}  # one instance per event for its deliveries to every endpoint
    for row in rows:
        if not row["fresh"]:
            held.add(row["endpoint_id"])
            continue
        event = events_by_id.get(row["event_id"])
        if event is None:
            event = events_by_id[row["event_id"]] = Event(
                id=row["event_id"],
                public_id=row["public_id"],
                partner_id=row["partner_id"],
                employer_id=row["employer_id"],
                type=row["type"],
                object_type=row["object_type"],
                object_id=row["object_id"],
                sequence=row["sequence"],
                data=row["data"],
                created_at=datetime.fromisoformat(row["event_created_at"]),
                position=row["position"],
            )
        created = datetime.fromisoformat(row["created_at"])
        delivery = WebhookDelivery(
            id=row["id"],
            endpoint_id=row["endpoint_id"],
            order_key=row["order_key"],
            status=DeliveryStatus.PENDING,
            attempts=0,
            created_at=created,
            next_attempt_at=created,
        )
        delivery.event = event
        fresh.append(delivery)
        urls[row["endpoint_id"]] = row["url"]
    return Sequenced(events, frozenset(endpoint_ids or ()), tuple(fresh), urls, frozenset(held))


def sequence_and_fan_out(*, limit: int = SEQUENCE_BATCH) -> Sequenced:
    """`events_sequence`, also returning what it created (`Sequenced`): the dispatcher hands the fresh
    deliveries to its runs of those endpoints instead of waiting for them to query (ADR 0052)."""
    with transaction.atomic():
        now = timezone.now()
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                # The lock, and this transaction's statements and commit-time foreign-key checks planned for their
                # values (ADR 0059): a plan cached while the tables were small is a sequential scan.
                cursor.execute(f"SELECT pg_advisory_xact_lock(%s), {PLAN_FOR_VALUES}", [SEQUENCER_LOCK])
                cursor.execute(
                    _SEQUENCE_SQL,
                    {
                        "limit": limit,
                        "now": now,
                        "pending": DeliveryStatus.PENDING.value,
                        "positioned_channel": POSITIONED_CHANNEL,
                        "webhooks_channel": NOTIFY_CHANNEL,
                        "hand_over_max": HAND_OVER_MAX,
                    },
                )
                events, endpoints, _, _, rows = cursor.fetchone()
            return _sequenced(int(events), endpoints, rows)
        todo = list(Event.objects.filter(position__isnull=True).order_by("id").values_list("id", flat=True)[:limit])
        top = Event.objects.aggregate(top=Max("position"))["top"] or 0
        for offset, pk in enumerate(todo, start=1):
            Event.objects.filter(pk=pk).update(position=top + offset, positioned_at=now)
        if not todo:
            return Sequenced(0)
        deliveries_create(Event.objects.filter(pk__in=todo).order_by("position"))
        created_for = WebhookDelivery.objects.filter(event_id__in=todo).values_list("endpoint_id", flat=True)
        endpoint_ids = frozenset(created_for)
    return Sequenced(len(todo), endpoint_ids)


def endpoint_wants(endpoint: WebhookEndpoint, event: Event) -> bool:
    """Is `event` for `endpoint`: same partner, a subscribed type, and an employer the endpoint may see."""
    if endpoint.partner_id != event.partner_id or event.type not in endpoint.event_types:
        return False
    if endpoint.employer_ids is None or event.employer_id is None:
        return True
    return event.employer_id in endpoint.employer_ids


def deliveries_create(events: Iterable[Event], *, endpoints: Sequence[WebhookEndpoint] | None = None) -> int:
    """One pending delivery per (event, active subscribed endpoint), in the events' order."""
    events = list(events)
    if not events:
        return 0
    if endpoints is None:
        partner_ids = {e.partner_id for e in events}
        endpoints = list(WebhookEndpoint.objects.filter(partner_id__in=partner_ids, is_active=True).order_by("id"))
    if not endpoints:
        return 0
    now = timezone.now()
    rows = [
        WebhookDelivery(
            endpoint_id=endpoint.pk,
            event_id=event.pk,
            order_key=f"{event.object_type}:{event.object_id}",
            created_at=now,
            next_attempt_at=now,
        )
        for event in events
        for endpoint in endpoints
        if endpoint_wants(endpoint, event)
    ]
    WebhookDelivery.objects.bulk_create(rows, batch_size=2000)
    if rows and connection.vendor == "postgresql":
        # At commit, wake the dispatchers: a run lingering on one of these endpoints queries for them (the
        # sequencer's own deliveries are handed over instead; these — a redelivery — are not).
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_notify(%s, '')", [NOTIFY_CHANNEL])
    return len(rows)


def _nudge_dispatcher() -> None:
    from apps.partners.webhooks.dispatch import dispatcher_nudge

    dispatcher_nudge()
