"""Delivering webhooks: per-endpoint runs on their own schedule, outside the outbox (SPEC §10, ADR 0030).

The outbox hands events to the sequencer within milliseconds; deliveries then live in `WebhookDelivery`
with their own attempt schedule, so a partner endpoint that is down for days never shows as outbox
pending age or dead rows.

`dispatch_once()` / `dispatch_forever()`:
1. **Claim endpoints** (short transaction, `FOR UPDATE SKIP LOCKED`): active, not in endpoint backoff, not
   leased, with a due pending delivery. Each claimed endpoint gets a lease (token + expiry): one sender per
   endpoint at a time across every process — deliveries of one object leave in order, and a slow endpoint
   ties up only its own sender.
2. **Run each endpoint** on a thread of the process's pool (`WEBHOOKS["DISPATCH_THREADS"]`), no transaction
   open while sending: load up to `DISPATCH_BATCH` due deliveries in id (= position) order, skipping an
   object whose earlier delivery is still backing off, check the URL (`sender.target_check`, ADR 0031) and
   send each to the checked address (`sender.send`): signed with every active secret, `webhook-id` = the
   event's id (the same on every retry and redelivery). While more are due, the run takes the next batch, for
   up to `RUN_DRAIN_SECONDS` (ADR 0046): one claim serves a steady trickle of small batches. Under
   `dispatch_forever` a run that finds nothing due lingers for the rest of that time, and the loop's sequencer
   hands it each new delivery that is the first pending one of its object (`RunHandle`, ADR 0052): no query,
   claim or secret opening per event.
3. **Record** each outcome in one transaction per batch (an all-2xx batch: one statement): attempt rows;
   delivered rows; failed rows back off
   (`backoff_seconds`) and give up after `RETRY_WINDOW_HOURS`, holding back only the later deliveries of their
   object; a 410 disables the endpoint; a connection error, a timeout, 429, 502, 503 or 504 — or three failures
   in a row — also puts the whole endpoint in backoff and ends the run (no hammering a dead receiver; its other
   deliveries wait, nobody else's do; ADR 0066). The lease is released.
4. Giving up on a delivery when the endpoint has not succeeded for the whole window disables it and
   e-mails the partner's contact (outbox `partners.endpoint_disabled`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import BooleanField, Exists, F, OuterRef, Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from apps.common.logging import WarnAtMostEvery
from apps.common.secretbox import SealedValueError
from apps.outbox.services import outbox_enqueue
from apps.partners.contracts import PartnerAuditAction, PartnerTopic
from apps.partners.webhooks import sender
from apps.partners.webhooks.metrics import deliveries_recorded
from apps.partners.webhooks.models import (
    DeliveryStatus,
    Event,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookSecret,
)
from apps.partners.webhooks.plans import plan_for_values_in_session, plan_for_values_in_transaction
from apps.partners.webhooks.secrets import secret_open

if TYPE_CHECKING:
    from apps.partners.webhooks.events import Sequenced

log = logging.getLogger(__name__)


def backoff_seconds(failures: int) -> float:
    """Delay after the `failures`-th consecutive failure: exponential with equal jitter,
    uniform(d/2, d) with d = min(cap, base · 2^(failures−1)). Defaults (base 10 s, cap 12 h): ~10 s, 20 s,
    40 s, … 5.7 h, then every 6–12 h until the 72 h window ends (~17 attempts)."""
    conf = settings.WEBHOOKS
    base, cap = float(conf["BACKOFF_BASE_SECONDS"]), float(conf["BACKOFF_CAP_SECONDS"])
    delay = min(cap, base * (2 ** min(max(failures, 1) - 1, 40)))
    return random.uniform(delay / 2, delay)  # noqa: S311 - jitter, not crypto


def window() -> timedelta:
    return timedelta(hours=float(settings.WEBHOOKS["RETRY_WINDOW_HOURS"]))


def event_body(event: Event) -> str:
    """The JSON body every endpoint receives for `event` (also the events API's shape). Kept on the instance once
    it has its position: the sequencer hands one instance to the runs of every subscribed endpoint, and an event
    never changes after it is positioned."""
    body: str | None = event.__dict__.get("_keel_body")
    if body is None:
        body = json.dumps(event_payload(event), separators=(",", ":"), sort_keys=True)
        if event.position is not None:
            event.__dict__["_keel_body"] = body
    return body


def event_payload(event: Event) -> dict[str, Any]:
    return {
        "id": event.public_id,
        "type": event.type,
        "timestamp": event.created_at.isoformat().replace("+00:00", "Z"),
        "position": event.position,
        "sequence": event.sequence,
        "object": {"type": event.object_type, "id": event.object_id},
        "employer": event.employer_id,
        "data": event.data,
    }


# --- 1. claim ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Claim:
    endpoint_id: int
    token: str


def endpoints_claim(*, limit: int, exclude: set[int] | frozenset[int] = frozenset()) -> list[Claim]:
    if limit <= 0:
        return []
    now = timezone.now()
    token = uuid.uuid4()
    due = WebhookDelivery.objects.filter(
        endpoint_id=OuterRef("pk"), status=DeliveryStatus.PENDING, next_attempt_at__lte=now
    )
    with transaction.atomic():
        plan_for_values_in_transaction()  # `Exists(due)` by the partial pending index, at any table size (ADR 0059)
        ids = list(
            WebhookEndpoint.objects.select_for_update(skip_locked=True)
            .filter(is_active=True, retry_at__lte=now)
            .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
            .exclude(pk__in=list(exclude))
            .filter(Exists(due))
            .order_by("retry_at", "id")
            .values_list("pk", flat=True)[:limit]
        )
        if not ids:
            return []
        lease = now + timedelta(seconds=float(settings.WEBHOOKS["ENDPOINT_LEASE_SECONDS"]))
        WebhookEndpoint.objects.filter(pk__in=ids).update(leased_until=lease, lease_token=token)
    return [Claim(pk, str(token)) for pk in ids]


# --- 2. run one endpoint -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Outcome:
    delivery: WebhookDelivery
    result: sender.SendResult | None  # None: given up without sending (window passed)
    at: datetime


# "An earlier delivery of this row's object to its endpoint is still backing off", looked up per due row by the
# (endpoint, order_key) partial pending index. `LIMIT 1 OFFSET 0` keeps it a per-row subplan: as `NOT EXISTS`
# PostgreSQL pulls it up into an anti-join planned from row estimates, and on tables without column statistics
# (estimate: 1 row) it re-read every pending row of the endpoint for each due row — O(n²) in the backlog, so a
# dispatcher that fell behind fell further behind (ADR 0059).
_BACKING_OFF_SQL = (
    "EXISTS (SELECT 1 FROM partners_webhookdelivery x WHERE x.endpoint_id = partners_webhookdelivery.endpoint_id"
    " AND x.order_key = partners_webhookdelivery.order_key AND x.status = 'pending'"
    " AND x.id < partners_webhookdelivery.id AND x.next_attempt_at > %s LIMIT 1 OFFSET 0)"
)


def _due_deliveries(
    endpoint_id: int, *, now: datetime, limit: int, skip: frozenset[int] = frozenset()
) -> list[WebhookDelivery]:
    """Up to `limit` due deliveries of an **active** endpoint in id (= position) order, each with its event and
    the endpoint row as it is now (one query: a PATCH or a disable applies from the next batch on), skipping an
    object whose earlier delivery is still backing off (`_BACKING_OFF_SQL`) and the ids in `skip` (sent by the
    run, their records not yet written). Empty when the endpoint is inactive."""
    due = WebhookDelivery.objects.filter(
        endpoint_id=endpoint_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now
    )
    if skip:
        due = due.exclude(pk__in=sorted(skip))
    return list(
        due.filter(endpoint__is_active=True)
        .alias(backing_off=RawSQL(_BACKING_OFF_SQL, [now], output_field=BooleanField()))  # noqa: S611 - constant SQL
        .filter(backing_off=False)
        .select_related("event", "endpoint")
        .order_by("id")[:limit]
    )


@dataclass(eq=False, slots=True)
class RunHandle:
    """How the dispatcher loop talks to a run on a pool thread (`dispatch_forever`). `wake` is set when the
    loop's sequencer created deliveries for the run's endpoint; `release` asks a lingering run to give its
    thread back (another endpoint needs it); `lingering` says the run is waiting for work."""

    claim: Claim
    wake: threading.Event = field(default_factory=threading.Event)
    release: bool = False
    lingering: bool = False
    # When the run started sending without a pause (its start, or its last wake-up from lingering): the loop takes
    # the thread of a run busy for over `RUN_DRAIN_SECONDS` when another endpoint waits for one.
    busy_since: float = field(default_factory=time.monotonic)
    # Fresh deliveries of the endpoint handed over by the loop's sequencer (sendable at once, ADR 0052), the
    # endpoint's URL in the same snapshot, and whether the run must query (deliveries it was not handed).
    inbox: deque[WebhookDelivery] = field(default_factory=deque)
    url: str | None = None
    needs_query: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def ask_query(self) -> None:
        with self._lock:
            self.needs_query = True
        self.wake.set()

    def take_query(self) -> bool:
        with self._lock:
            asked, self.needs_query = self.needs_query, False
        return asked

    def hand_over(self, deliveries: list[WebhookDelivery], url: str | None) -> None:
        if url is not None:
            self.url = url
        self.inbox.extend(deliveries)  # one C call: the run takes a pass's deliveries together
        self.wake.set()

    def take(self) -> list[WebhookDelivery]:
        taken: list[WebhookDelivery] = []
        while self.inbox:
            taken.append(self.inbox.popleft())
        return taken


def endpoint_run(claim: Claim, *, handle: RunHandle | None = None) -> int:
    """Steps 2–3 for one claimed endpoint. Returns how many deliveries were delivered. With a `handle` (the
    dispatcher loop's), a run that finds nothing due waits on `handle.wake` for new deliveries until its drain
    time ends or the loop asks for the thread back, instead of returning at once (ADR 0052). The run's session
    plans each statement, and each attempt row's foreign-key check, for its values (ADR 0059), and commits its
    delivery records without waiting for the disk (ADR 0062: a crash can only make a delivery go out again).
    Under the loop (a `handle`, PostgreSQL) an all-2xx batch is recorded by the process's recorder thread while
    the run goes on sending (`_Recorder`, ADR 0062); the run waits for its records before it gives the lease back."""
    records = _RunRecords(_recorder() if handle is not None and connection.vendor == "postgresql" else None)
    with plan_for_values_in_session(commit_without_waiting_for_disk=True):
        try:
            return _endpoint_run(claim, handle, records)
        finally:
            records.settle()
            WebhookEndpoint.objects.filter(pk=claim.endpoint_id, lease_token=claim.token).update(
                leased_until=None, lease_token=None
            )


def _signing_secrets(endpoint_id: int, *, now: datetime) -> list[str]:
    """The endpoint's unexpired secrets, newest first, opened for signing. One that does not open (wrong
    WEBHOOK_SECRETS_KEY, tampered) is skipped with an error log; with none left nothing is sent, and the
    deliveries wait (and retry) until an operator fixes the key or the partner rotates the secret."""
    opened: list[str] = []
    stored = (
        WebhookSecret.objects.filter(endpoint_id=endpoint_id)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .order_by("-id")
        .values_list("pk", "secret")
    )
    for secret_id, sealed in stored:
        try:
            opened.append(secret_open(sealed, endpoint_id=endpoint_id))
        except SealedValueError:
            log.error("webhooks.secret_unreadable", extra={"endpoint_id": endpoint_id, "secret_id": secret_id})
    return opened


# A run keeps sending while its endpoint has due deliveries for up to this long without a pause, then gives its
# thread back: endpoints beyond the thread count wait at most this long behind a busy one. Run by the dispatcher
# loop, a run that finds nothing due waits for the loop's wake-up (ADR 0052) — until half its lease, or at once when
# the loop needs the thread for another endpoint — and each wake-up starts a new budget: at a steady trickle of
# events one claim, lease and due query serve every event for a minute instead of a second (ADR 0062). Its signing
# secrets are read again when they are this old, so a rotation signs with the new secret within about a second.
RUN_DRAIN_SECONDS = 1.0


# long: one run's loop — take what was handed over, query when asked, linger, refresh the secrets, send, hand the
# records over — whose state (endpoint, secrets, sent ids, sending budget) lives across its turns; split, that
# state would travel through every piece.
def _endpoint_run(claim: Claim, handle: RunHandle | None, records: _RunRecords) -> int:
    started = time.monotonic()
    # Stop well before the endpoint's lease expires: past it another sender could claim the endpoint.
    stop_at = started + 0.5 * float(settings.WEBHOOKS["ENDPOINT_LEASE_SECONDS"])
    drain_until = min(stop_at, started + RUN_DRAIN_SECONDS)
    limit = int(settings.WEBHOOKS["DISPATCH_BATCH"])
    secrets: list[str] = []
    secrets_at = started
    endpoint: WebhookEndpoint | None = None
    sent: set[int] = set()  # deliveries this run delivered: a handed-over one a query also returned goes once
    in_a_row = 0  # failures in a row across the run's batches (`FAILURES_IN_A_ROW_FOR_ENDPOINT`)
    query = True
    total = 0
    while True:
        handed: list[WebhookDelivery] = []
        if handle is not None:
            handle.wake.clear()  # before the query: deliveries created from here on wake the wait below
            handed = handle.take()
            query = handle.take_query() or query or (endpoint is None and bool(handed))
        now = timezone.now()
        deliveries: list[WebhookDelivery] = []
        if query:
            # Due deliveries with the endpoint as it is now (a PATCH or a disable applies from this batch on).
            deliveries = _due_deliveries(claim.endpoint_id, now=now, limit=limit, skip=records.in_flight())
            if deliveries:
                endpoint = deliveries[0].endpoint
            elif not handed:
                endpoint = None  # nothing due, or the endpoint is no longer active
            query = len(deliveries) >= limit  # a full batch: more may be due
        if endpoint is not None and handed:
            # Handed over by the sequencer in one snapshot with the endpoint, which was active with this URL.
            if handle is not None and handle.url:
                endpoint.url = handle.url
            known = {d.pk for d in deliveries}
            deliveries = sorted(deliveries + [d for d in handed if d.pk not in known], key=lambda d: d.pk)
        deliveries = [d for d in deliveries if d.pk not in sent]
        if endpoint is None or not deliveries:
            if handle is None or not _linger(handle, until=stop_at):
                return total
            drain_until = min(stop_at, time.monotonic() + RUN_DRAIN_SECONDS)  # a pause: a new sending budget
            handle.busy_since = time.monotonic()
            continue
        for d in deliveries:
            d.endpoint = endpoint
        if not secrets or time.monotonic() - secrets_at > RUN_DRAIN_SECONDS:
            secrets, secrets_at = _signing_secrets(endpoint.pk, now=now), time.monotonic()
            if not secrets:
                return total
        outcomes, gone, endpoint_failed, in_a_row = _send_batch(
            endpoint, deliveries, secrets, stop_at=stop_at, failures_in_a_row=in_a_row
        )
        # Delivered ones only: a failed one is recorded before the run goes on (pending, backing off), and must be
        # sent again — before its object's later deliveries — when a query finds it due (ADR 0066).
        sent.update(o.delivery.pk for o in outcomes if o.result is not None and o.result.ok)
        if records.handed_to_recorder(endpoint, outcomes, gone=gone, endpoint_failed=endpoint_failed):
            total += len(outcomes)
        elif records.settle():  # this endpoint's earlier records land before a failure's (its state moves in order)
            total += _record(endpoint, outcomes, gone=gone, endpoint_failed=endpoint_failed)
        else:
            return total  # a record failed (the database away): stop; the unrecorded deliveries are sent again
        if gone or endpoint_failed:
            return total
        # Alone, a run gives its thread back after its sending budget; under the loop, when the loop asks for the
        # thread (another endpoint waits: `_DispatchLoop._claim_or_release`) or at half its lease.
        if time.monotonic() > (drain_until if handle is None else stop_at) or (handle is not None and handle.release):
            return total


def _linger(handle: RunHandle, *, until: float) -> bool:
    """Wait, holding the endpoint's lease and this thread, for the loop to say new deliveries exist
    (`handle.wake`) — at most until `until` (the run's drain time). Returns whether to query again: False when
    the time is up or the loop wants the thread for another endpoint (`handle.release`)."""
    remaining = until - time.monotonic()
    if remaining <= 0 or handle.release:
        return False
    handle.lingering = True
    try:
        woken = handle.wake.wait(remaining)
    finally:
        handle.lingering = False
    return woken and not handle.release


# Answers that say the receiver as a whole cannot take deliveries now (rather than that it refused this one): they
# put the whole endpoint in backoff. Any other failure (another 5xx, a 4xx, a redirect) backs off that delivery only,
# holding back the later events of its object and no other (ADR 0066) — unless this many deliveries in a row fail.
ENDPOINT_DOWN_STATUSES = frozenset({429, 502, 503, 504})
FAILURES_IN_A_ROW_FOR_ENDPOINT = 3


def endpoint_is_down(result: sender.SendResult) -> bool:
    """A connection error, a timeout (no status) or an `ENDPOINT_DOWN_STATUSES` answer."""
    return result.status_code is None or result.status_code in ENDPOINT_DOWN_STATUSES


def _send_batch(
    endpoint: WebhookEndpoint,
    deliveries: list[WebhookDelivery],
    secrets: list[str],
    *,
    stop_at: float,
    failures_in_a_row: int = 0,
) -> tuple[list[_Outcome], bool, bool, int]:
    """Send `deliveries` in order to the endpoint's URL, checked once for the batch (the connection goes to the
    checked address). Returns (outcomes, gone, endpoint_failed, failures in a row): a 410 ends the batch (`gone`);
    so does a failure that says the endpoint is down (`endpoint_is_down`) or the
    `FAILURES_IN_A_ROW_FOR_ENDPOINT`-th failure in a row, counting from `failures_in_a_row` (the run's earlier
    batches) (`endpoint_failed`); any other failure skips the rest of that object's deliveries in the batch and
    goes on."""
    outcomes: list[_Outcome] = []
    blocked: set[str] = set()
    in_a_row = failures_in_a_row
    checked = sender.target_check(endpoint.url)
    for delivery in deliveries:
        if time.monotonic() > stop_at:
            break
        at = timezone.now()
        if delivery.order_key in blocked:
            continue
        if at > delivery.created_at + window():
            outcomes.append(_Outcome(delivery, None, at))
            continue
        if isinstance(checked, sender.SendResult):  # refused by the URL policy: one failed attempt, then back off
            outcomes.append(_Outcome(delivery, checked, at))
            return outcomes, False, True, in_a_row + 1
        body = event_body(delivery.event)
        headers = sender.sign_headers(msg_id=delivery.event.public_id, body=body, secrets=secrets)
        result = sender.send(url=endpoint.url, body=body.encode(), headers=headers, target=checked)
        outcomes.append(_Outcome(delivery, result, at))
        if result.ok:
            in_a_row = 0
            continue
        blocked.add(delivery.order_key)
        in_a_row += 1
        if result.status_code == 410:
            return outcomes, True, False, in_a_row
        if endpoint_is_down(result) or in_a_row >= FAILURES_IN_A_ROW_FOR_ENDPOINT:
            return outcomes, False, True, in_a_row
    return outcomes, False, False, in_a_row


# --- 3. record -----------------------------------------------------------------------------------------


# long: step 3 of the module docstring in one transaction: the all-2xx fast path, then per-outcome conditional
# updates, 410 and whole-window disabling; split, the one transaction and `now` would travel through each piece.
def _record(endpoint: WebhookEndpoint, outcomes: list[_Outcome], *, gone: bool, endpoint_failed: bool) -> int:
    """Record a batch's outcomes in one transaction (see the module docstring, step 3); returns how many were
    delivered. Every delivery update is conditional on the row still being pending: recorded once."""
    if not outcomes:
        return 0
    now = timezone.now()
    if connection.vendor == "postgresql" and _all_delivered(outcomes, gone=gone, endpoint_failed=endpoint_failed):
        _record_delivered([(endpoint.pk, outcomes)], now=now)
        _mark_succeeded(endpoint, now)
        deliveries_recorded(delivered=len(outcomes), retry=0, failed=0)
        return len(outcomes)
    attempts: list[WebhookAttempt] = []
    delivered: list[int] = []
    given_up: list[tuple[int, int, str]] = []
    retry: list[tuple[int, int, datetime, str]] = []
    for o in outcomes:
        d = o.delivery
        if o.result is None:
            given_up.append((d.pk, d.attempts, "retry window passed"))
            continue
        number = d.attempts + 1
        attempts.append(
            WebhookAttempt(
                delivery_id=d.pk,
                endpoint_id=endpoint.pk,
                event_public_id=d.event.public_id,
                event_type=d.event.type,
                attempt=number,
                at=o.at,
                status_code=o.result.status_code,
                latency_ms=o.result.latency_ms,
                response_excerpt=o.result.excerpt[:1000],
                error=o.result.error[:500],
                succeeded=o.result.ok,
            )
        )
        if o.result.ok:
            delivered.append(d.pk)
        elif o.result.status_code == 410:
            given_up.append((d.pk, number, "410 Gone: endpoint disabled"))
        else:
            next_at = now + timedelta(seconds=backoff_seconds(number))
            if next_at > d.created_at + window():
                given_up.append((d.pk, number, f"retry window passed; last: {o.result.error}"[:500]))
            else:
                retry.append((d.pk, number, next_at, o.result.error[:500]))
    with transaction.atomic():
        if gone or given_up:
            # This batch may disable the endpoint (an audit row, an e-mail through the outbox): durable, unlike
            # the run's delivery records (`plan_for_values_in_session`, ADR 0062).
            _commit_waiting_for_disk()
        WebhookAttempt.objects.bulk_create(attempts, batch_size=1000)
        if delivered:
            WebhookDelivery.objects.filter(pk__in=delivered, status=DeliveryStatus.PENDING).update(
                status=DeliveryStatus.DELIVERED, finished_at=now, attempts=F("attempts") + 1, last_error=""
            )
        for pk, number, next_at, error in retry:
            WebhookDelivery.objects.filter(pk=pk, status=DeliveryStatus.PENDING).update(
                attempts=number, next_attempt_at=next_at, last_error=error
            )
        for pk, number, reason in given_up:
            WebhookDelivery.objects.filter(pk=pk, status=DeliveryStatus.PENDING).update(
                status=DeliveryStatus.FAILED, finished_at=now, attempts=number, last_error=reason
            )
        if delivered and not (endpoint_failed or gone):
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
                consecutive_failures=0, failing_since=None, last_success_at=now, retry_at=now
            )
        elif delivered:
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(last_success_at=now)
        if endpoint_failed:
            failures = endpoint.consecutive_failures + 1
            WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
                consecutive_failures=failures,
                retry_at=now + timedelta(seconds=backoff_seconds(failures)),
                failing_since=endpoint.failing_since or now,
            )
            endpoint.failing_since = endpoint.failing_since or now
        if gone:
            endpoint_disable(endpoint_id=endpoint.pk, reason="the endpoint answered 410 Gone", notify=False)
        elif given_up and not delivered and _failing_for_whole_window(endpoint, now):
            endpoint_disable(
                endpoint_id=endpoint.pk,
                reason=f"every delivery failed for {settings.WEBHOOKS['RETRY_WINDOW_HOURS']} hours",
                notify=True,
            )
        deliveries_recorded(delivered=len(delivered), retry=len(retry), failed=len(given_up))
    return len(delivered)


def _all_delivered(outcomes: list[_Outcome], *, gone: bool, endpoint_failed: bool) -> bool:
    return not (gone or endpoint_failed) and all(o.result is not None and o.result.ok for o in outcomes)


def _mark_succeeded(endpoint: WebhookEndpoint, now: datetime) -> None:
    """The run keeps its endpoint object for its next batches: keep it as the row now is (a later failure
    counts 1)."""
    endpoint.consecutive_failures, endpoint.failing_since, endpoint.last_success_at = 0, None, now


# The common outcome — every delivery of a batch answered 2xx — as one statement (atomic on its own), for the
# batches of any number of endpoints: the attempt rows, the deliveries marked delivered (only those still
# pending), and each endpoint's success, written only when it changes something or `last_success_at` is a second
# old (it serves the 72 h give-up rule and the admin list, not an audit). One round trip instead of four per
# batch (ADR 0052), and one for every run's batches at once through the recorder (ADR 0062).
_RECORD_DELIVERED_SQL = """
WITH attempt AS (
    INSERT INTO partners_webhookattempt (delivery_id, endpoint_id, event_public_id, event_type, attempt, at,
        status_code, latency_ms, response_excerpt, error, succeeded)
    SELECT u.delivery_id, u.endpoint_id, u.public_id, u.type, u.attempt, u.at, u.status_code, u.latency_ms,
        u.excerpt, '', true
    FROM unnest(%(ids)s::bigint[], %(endpoint_ids)s::bigint[], %(public_ids)s::text[], %(types)s::text[],
        %(attempts)s::int[], %(ats)s::timestamptz[], %(status_codes)s::int[], %(latencies)s::int[],
        %(excerpts)s::text[])
        AS u(delivery_id, endpoint_id, public_id, type, attempt, at, status_code, latency_ms, excerpt)
), delivered AS (
    UPDATE partners_webhookdelivery SET status = %(delivered)s, finished_at = %(now)s, attempts = attempts + 1,
        last_error = ''
    WHERE id = ANY(%(ids)s::bigint[]) AND status = %(pending)s
)
UPDATE partners_webhookendpoint
SET consecutive_failures = 0, failing_since = NULL, last_success_at = %(now)s, retry_at = %(now)s
WHERE id = ANY(%(endpoints)s::bigint[]) AND (consecutive_failures <> 0 OR failing_since IS NOT NULL
    OR retry_at > %(now)s OR last_success_at IS NULL OR last_success_at < %(now)s - interval '1 second')
"""


def _record_delivered(batches: list[tuple[int, list[_Outcome]]], *, now: datetime) -> None:
    """Record all-2xx batches, `(endpoint id, outcomes)` each, in one statement (`_RECORD_DELIVERED_SQL`)."""
    rows = [(endpoint_id, o) for endpoint_id, outcomes in batches for o in outcomes if o.result is not None]
    with connection.cursor() as cursor:
        cursor.execute(
            _RECORD_DELIVERED_SQL,
            {
                "endpoints": sorted({endpoint_id for endpoint_id, _ in batches}),
                "ids": [o.delivery.pk for _, o in rows],
                "endpoint_ids": [endpoint_id for endpoint_id, _ in rows],
                "public_ids": [o.delivery.event.public_id for _, o in rows],
                "types": [o.delivery.event.type for _, o in rows],
                "attempts": [o.delivery.attempts + 1 for _, o in rows],
                "ats": [o.at for _, o in rows],
                "status_codes": [o.result.status_code for _, o in rows if o.result is not None],
                "latencies": [o.result.latency_ms for _, o in rows if o.result is not None],
                "excerpts": [o.result.excerpt[:1000] for _, o in rows if o.result is not None],
                "delivered": DeliveryStatus.DELIVERED.value,
                "pending": DeliveryStatus.PENDING.value,
                "now": now,
            },
        )


@dataclass(eq=False, slots=True)
class _PendingRecord:
    """A run's all-2xx batch handed to the recorder; `done` is set once it is written (`failed`: it was not)."""

    endpoint_id: int
    outcomes: list[_Outcome]
    done: threading.Event = field(default_factory=threading.Event)
    failed: bool = False


class _Recorder:
    """One thread per dispatcher process that writes the all-2xx batches of every endpoint run, as many as are
    waiting, in one statement (`_record_delivered`), so that a run goes on sending while its last batch is
    recorded: at a steady trickle of events each run sends one delivery per event, and recording it before taking
    the next put a database round trip (and, before ADR 0062, a WAL flush) between consecutive deliveries of an
    endpoint, and one statement per delivery on the process (ADR 0062). A run waits for its records before it
    records a failure or gives its lease back (`_RunRecords.settle`), so an endpoint's state moves in order and no
    other run sends what this one sent. The thread keeps its session (planned for values, commits not waiting for
    the disk) while batches keep coming, and gives the connection back after `IDLE_SECONDS` without one."""

    IDLE_SECONDS = 1.0
    MAX_BATCHES = 500  # per statement

    def __init__(self, *, start: bool = True) -> None:
        self._queue: queue.SimpleQueue[_PendingRecord] = queue.SimpleQueue()
        if start:
            threading.Thread(target=self._loop, name="webhooks-recorder", daemon=True).start()

    def submit(self, endpoint_id: int, outcomes: list[_Outcome]) -> _PendingRecord:
        pending = _PendingRecord(endpoint_id, outcomes)
        self._queue.put(pending)
        return pending

    def take(self, *, timeout: float) -> list[_PendingRecord]:
        """Every batch waiting now (up to `MAX_BATCHES`), waiting up to `timeout` seconds for the first."""
        try:
            taken = [self._queue.get(timeout=timeout)]
        except queue.Empty:
            return []
        with contextlib.suppress(queue.Empty):
            while len(taken) < self.MAX_BATCHES:
                taken.append(self._queue.get_nowait())
        return taken

    def flush(self, taken: list[_PendingRecord]) -> None:
        """Write `taken` in one statement and wake their runs; a failure marks them failed (never raises)."""
        try:
            _record_delivered([(p.endpoint_id, p.outcomes) for p in taken], now=timezone.now())
            deliveries_recorded(delivered=sum(len(p.outcomes) for p in taken), retry=0, failed=0)
        except Exception:
            log.warning("webhooks.record_failed", exc_info=True, extra={"batches": len(taken)})
            for p in taken:
                p.failed = True
        finally:
            for p in taken:
                p.done.set()

    def _loop(self) -> None:
        while True:
            taken = self.take(timeout=3600.0)
            try:
                with plan_for_values_in_session(commit_without_waiting_for_disk=True):
                    while taken:
                        self.flush(taken)
                        taken = self.take(timeout=self.IDLE_SECONDS)
            except Exception:  # the session could not be set up (the database away): these batches were not written
                log.warning("webhooks.record_failed", exc_info=True, extra={"batches": len(taken)})
                for p in taken:
                    p.failed = True
                    p.done.set()
                time.sleep(0.5)
            finally:
                connection.close()  # back to the pool while no batch comes


_the_recorder: _Recorder | None = None


def _recorder() -> _Recorder:
    global _the_recorder
    with _executor_lock:
        if _the_recorder is None:
            _the_recorder = _Recorder()
        return _the_recorder


class _RunRecords:
    """An endpoint run's batches handed to the recorder (`recorder` None: the run records each batch itself)."""

    SETTLE_SECONDS = 30.0

    def __init__(self, recorder: _Recorder | None) -> None:
        self.recorder = recorder
        self.pending: list[_PendingRecord] = []

    def handed_to_recorder(
        self, endpoint: WebhookEndpoint, outcomes: list[_Outcome], *, gone: bool, endpoint_failed: bool
    ) -> bool:
        """Hand an all-2xx batch to the recorder; False (the run records it itself) for any other batch."""
        if (
            self.recorder is None
            or not outcomes
            or not _all_delivered(outcomes, gone=gone, endpoint_failed=endpoint_failed)
        ):
            return False
        self.pending.append(self.recorder.submit(endpoint.pk, outcomes))
        _mark_succeeded(endpoint, timezone.now())
        return True

    def in_flight(self) -> frozenset[int]:
        """The deliveries handed to the recorder and not yet written (a due query need not load them again)."""
        return frozenset(o.delivery.pk for p in self.pending if not p.done.is_set() for o in p.outcomes)

    def settle(self) -> bool:
        """Wait for this run's batches to be written; False if one failed or did not land within
        `SETTLE_SECONDS` (its deliveries stay pending and go out again after the lease)."""
        written = True
        for pending in self.pending:
            written = pending.done.wait(self.SETTLE_SECONDS) and not pending.failed and written
        self.pending.clear()
        return written


def _commit_waiting_for_disk() -> None:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit = on")


def _failing_for_whole_window(endpoint: WebhookEndpoint, now: datetime) -> bool:
    """No successful delivery within the retry window, and the endpoint existed for all of it."""
    start = now - window()
    if endpoint.created_at > start:
        return False
    return endpoint.last_success_at is None or endpoint.last_success_at < start


def endpoint_disable(*, endpoint_id: int, reason: str, notify: bool) -> bool:
    """Disable an endpoint (conditional: once) and give up its pending deliveries; with `notify`, e-mail the
    partner's contact through the outbox. Returns whether this call disabled it. Must run in a transaction."""
    now = timezone.now()
    changed = WebhookEndpoint.objects.filter(pk=endpoint_id, is_active=True).update(
        is_active=False, disabled_at=now, disabled_reason=reason[:300], leased_until=None, lease_token=None
    )
    if not changed:
        return False
    WebhookDelivery.objects.filter(endpoint_id=endpoint_id, status=DeliveryStatus.PENDING).update(
        status=DeliveryStatus.FAILED, finished_at=now, last_error=f"endpoint disabled: {reason}"[:500]
    )
    from apps.audit.services import audit_record
    from apps.common.actors import Actor

    partner_id = WebhookEndpoint.objects.filter(pk=endpoint_id).values_list("partner_id", flat=True).first()
    audit_record(
        actor=Actor.system("webhooks.dispatch"),
        action=PartnerAuditAction.WEBHOOK_ENDPOINT_DISABLED,
        object_type="webhook_endpoint",
        object_id=endpoint_id,
        after={"is_active": False, "reason": reason},
    )
    if notify:
        outbox_enqueue(
            topic=PartnerTopic.ENDPOINT_DISABLED,
            payload={"endpoint_id": endpoint_id, "partner_id": partner_id, "reason": reason},
            key=f"webhook_endpoint:{endpoint_id}",
        )
    return True


# --- the loop ------------------------------------------------------------------------------------------

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _pool() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=int(settings.WEBHOOKS["DISPATCH_THREADS"]), thread_name_prefix="webhooks"
            )
        return _executor


def run_slots() -> int:
    """How many endpoint runs go at once: `WEBHOOKS["DISPATCH_THREADS"]`, but never more than the process's
    database connection pool can serve beside the dispatcher loop's own connection, the recorder's and one spare
    (each run holds a connection). More runs than pooled connections made a run's lease release itself wait for a
    connection and time out, leaving its endpoint leased — unsent — until the lease expired."""
    threads = int(settings.WEBHOOKS["DISPATCH_THREADS"])
    pool = connection.settings_dict.get("OPTIONS", {}).get("pool")
    if isinstance(pool, dict) and pool.get("max_size"):
        return max(1, min(threads, int(pool["max_size"]) - 3))
    return threads


def pool_reserve(threads: int) -> None:
    """For a process that is only a dispatcher (`manage.py webhook_dispatch`): make the connection pool large
    enough for `threads` runs plus the loop's connection, the recorder's and a spare (`run_slots()` then allows
    them all)."""
    pool = connection.settings_dict.get("OPTIONS", {}).get("pool")
    if not isinstance(pool, dict) or int(pool.get("max_size") or 0) >= threads + 3:
        return
    pool["max_size"] = threads + 3  # in place: every thread's connection wrapper shares this settings dict
    close_pool = getattr(connection, "close_pool", None)  # the PostgreSQL backend's
    if close_pool is not None and connection.alias in getattr(type(connection), "_connection_pools", {}):
        close_pool()  # opened already with the smaller size: the next connection opens the new one


def dispatch_once(*, inline: bool = True) -> int:
    """Sequence committed events, then claim every ready endpoint once and run them; `inline` runs them one
    after another in this thread (tests, SQLite). Returns how many deliveries were delivered."""
    from apps.partners.webhooks.events import events_sequence

    events_sequence()
    total = 0
    claims = endpoints_claim(limit=run_slots())
    if inline or connection.vendor != "postgresql":
        for c in claims:
            total += endpoint_run(c)
        return total
    futures = [_pool().submit(_threaded_run, c) for c in claims]
    for f in futures:
        total += f.result()
    return total


def _threaded_run(claim: Claim, handle: RunHandle | None = None) -> int:
    from django.db import close_old_connections

    close_old_connections()
    try:
        return endpoint_run(claim, handle=handle)
    except Exception:
        log.warning("webhooks.endpoint_run_failed", exc_info=True, extra={"endpoint": claim.endpoint_id})
        return 0
    finally:
        # Back to the pool (PostgreSQL settings pool connections): no idle connection per pool thread.
        connection.close()


def dispatch_forever(
    *,
    should_stop: Callable[[], bool] = lambda: False,
    max_seconds: float | None = None,
    idle_seconds: float = 1.0,
    idle_exit: bool = False,
) -> int:
    """Keep every pool thread busy with a claimed endpoint until `should_stop()` or `max_seconds` — or, with
    `idle_exit` (the Celery task), until a pass finds nothing to sequence, claim or wait for. Returns how many
    deliveries were delivered.

    A *pass* (1) sequences committed events (positions + deliveries, `events.sequence_and_fan_out`), (2) wakes
    this process's runs of the endpoints that got deliveries — a run that found nothing due waits for exactly
    this (`RunHandle`) instead of giving its endpoint back and being claimed again, (3) collects finished runs
    and (4) claims endpoints for the free threads (excluding those running here), so a slow endpoint holds one
    thread and never the others' turns; with no thread free while another endpoint may be waiting (new
    deliveries for an endpoint not running here, or every `idle_seconds`), lingering runs are asked to give
    their threads back. A pass runs as soon as something happens — a commit that wrote events or another
    process's deliveries (PostgreSQL NOTIFY `keel_events` / `keel_webhooks`, received by a listener thread) or
    a run finishing — and at least every `idle_seconds`; the loop sleeps on one `threading.Event` in between
    (ADR 0052). The Celery task (`idle_exit`) is woken the same way; only its runs do not linger.
    """
    deadline = None if max_seconds is None else time.monotonic() + max_seconds
    if connection.vendor != "postgresql":
        return _dispatch_inline(
            should_stop=should_stop, deadline=deadline, idle_seconds=idle_seconds, idle_exit=idle_exit
        )
    loop = _DispatchLoop(idle_seconds=idle_seconds, idle_exit=idle_exit)
    try:
        while not should_stop() and (deadline is None or time.monotonic() < deadline):
            if not loop.run_pass() and idle_exit:
                break
            loop.wait(deadline=deadline, should_stop=should_stop)
        return loop.finish()
    finally:
        loop.close()


def _dispatch_inline(
    *, should_stop: Callable[[], bool], deadline: float | None, idle_seconds: float, idle_exit: bool
) -> int:
    """SQLite (the embedded default) has one writer: run the endpoints one after another in this thread."""
    total = 0
    while not should_stop() and (deadline is None or time.monotonic() < deadline):
        delivered = dispatch_once(inline=True)
        total += delivered
        if not delivered:
            if idle_exit:
                break
            time.sleep(min(idle_seconds, 0.2))
    return total


class _DispatchLoop:
    """The state `dispatch_forever` keeps between passes: the runs going on the pool's threads (with their
    `RunHandle`), the one event the loop sleeps on, the listener that sets it, and the delivered count."""

    def __init__(self, *, idle_seconds: float, idle_exit: bool) -> None:
        self.threads = run_slots()
        self.running: dict[Future[int], RunHandle] = {}
        self.wake = threading.Event()
        self.own_pids: set[int] = set()  # this loop's database sessions: their own NOTIFY keel_webhooks is no news
        self.idle_seconds = idle_seconds
        self.linger = not idle_exit  # the Celery task's runs give their thread back when nothing is due
        # The Celery task (`idle_exit`, queued every second by beat) listens only once it has something to wait
        # for: an idle run returns after its first pass without opening a connection.
        self.listener = None if idle_exit else _Listener(self.wake, ignore_pids=self.own_pids)
        self.last_sweep = time.monotonic()
        self.sweeps = 0
        self.total = 0

    def run_pass(self) -> bool:
        """One pass (steps 1–4 of `dispatch_forever`'s docstring). Returns whether there was anything to do:
        events sequenced, endpoints claimed or runs still going."""
        from apps.partners.webhooks.events import sequence_and_fan_out

        self.wake.clear()  # before the pass: anything that happens during it makes the next wait return at once
        for future in [f for f in self.running if f.done()]:
            self.running.pop(future)
            self.total += future.result()
        sweep = time.monotonic() - self.last_sweep >= self.idle_seconds
        if sweep:
            self.last_sweep = time.monotonic()
        sequenced = claimed = 0
        try:
            done = sequence_and_fan_out()
            sequenced = done.events
            _remember_session(self.own_pids)
            here = {h.claim.endpoint_id: h for h in self.running.values()}
            self._hand_over(done, here, sweep=sweep)
            claimed = self._claim_or_release(done.endpoint_ids, here, sweep=sweep)
        except Exception:
            log.warning("webhooks.claim_failed", exc_info=True)
            connection.close()
            time.sleep(0.5)
        return bool(sequenced or claimed or self.running)

    def _hand_over(self, done: Sequenced, here: dict[int, RunHandle], *, sweep: bool) -> None:
        """Step 2: give this process's runs the fresh deliveries of their endpoints; ask them to query when
        they were not handed everything (a delivery queued behind another, another process's deliveries, the
        idle sweep: retries come due by time)."""
        if self.listener is not None and self.listener.take_foreign():
            for handle in here.values():  # another process queued deliveries: runs query again
                handle.ask_query()
        fresh: dict[int, list[WebhookDelivery]] = {}
        for delivery in done.fresh:
            fresh.setdefault(delivery.endpoint_id, []).append(delivery)
        for endpoint_id in done.endpoint_ids & here.keys():
            handle = here[endpoint_id]
            if endpoint_id in done.held_endpoint_ids or endpoint_id not in fresh:
                handle.ask_query()
            handle.hand_over(fresh.get(endpoint_id, []), done.fresh_urls.get(endpoint_id))
        if sweep:
            # Retries come due by time, and nothing announces them: ask the runs whose endpoints have one. Every
            # `FULL_SWEEP_EVERY`-th sweep asks every run, a safety net for anything else not handed over.
            self.sweeps += 1
            full = self.sweeps % FULL_SWEEP_EVERY == 0
            for endpoint_id in here.keys() if full else _with_due_retries(here.keys()):
                here[endpoint_id].ask_query()

    def _claim_or_release(self, endpoint_ids: frozenset[int], here: dict[int, RunHandle], *, sweep: bool) -> int:
        """Step 4: claim endpoints for the free threads (not those running here) and start their runs; with no
        thread free while another endpoint may be waiting (it got deliveries, or the idle sweep), ask the
        lingering runs to give their threads back. Returns how many endpoints were claimed."""
        free = self.threads - len(self.running)
        if free <= 0:
            waiting = len(endpoint_ids - here.keys())
            if sweep and not waiting:
                waiting = _claimable_count(exclude=set(here), limit=self.threads)
            if waiting:
                # Lingering runs first, then runs that have been sending for over their budget (the longest first).
                now = time.monotonic()
                handles = [h for h in self.running.values() if not h.release]
                lingering = [h for h in handles if h.lingering]
                busy = sorted(
                    (h for h in handles if not h.lingering and now - h.busy_since > RUN_DRAIN_SECONDS),
                    key=lambda h: h.busy_since,
                )
                for handle in (lingering + busy)[:waiting]:
                    handle.release = True
                    handle.wake.set()
            return 0
        claims = endpoints_claim(limit=free, exclude=set(here))
        for claim in claims:
            handle = RunHandle(claim)
            future = _pool().submit(_threaded_run, claim, handle if self.linger else None)
            future.add_done_callback(lambda _f: self.wake.set())
            self.running[future] = handle
        return len(claims)

    def wait(self, *, deadline: float | None, should_stop: Callable[[], bool]) -> None:
        """Sleep until something happens (`wake`) or the next idle sweep is due (or the deadline)."""
        if self.listener is None:
            self.listener = _Listener(self.wake, ignore_pids=self.own_pids)
            self.wake.set()  # anything committed before LISTEN: one more pass looks at once
        timeout = self.idle_seconds - (time.monotonic() - self.last_sweep)
        if deadline is not None:
            timeout = min(timeout, deadline - time.monotonic())
        _wait(self.wake, timeout, should_stop)

    def finish(self) -> int:
        """Ask every run to stop lingering, wait for them, and return how many deliveries were delivered."""
        for handle in self.running.values():
            handle.release = True
            handle.wake.set()
        for future in list(self.running):
            self.total += future.result()
        return self.total

    def close(self) -> None:
        if self.listener is not None:
            self.listener.close()
        connection.close()


# Every how many idle sweeps the loop asks each of its runs to query, whether or not a retry of its endpoint is due.
FULL_SWEEP_EVERY = 10


def _with_due_retries(endpoint_ids: Iterable[int]) -> set[int]:
    """Which of `endpoint_ids` have a pending delivery that failed before and is due again (one query by the
    partial pending index, planned for its values: ADR 0059)."""
    ids = list(endpoint_ids)
    if not ids:
        return set()
    with transaction.atomic():
        plan_for_values_in_transaction()
        return set(
            WebhookDelivery.objects.filter(
                endpoint_id__in=ids, status=DeliveryStatus.PENDING, attempts__gt=0, next_attempt_at__lte=timezone.now()
            )
            .values_list("endpoint_id", flat=True)
            .distinct()
        )


def _claimable_count(*, exclude: set[int], limit: int) -> int:
    """How many endpoints (up to `limit`, not in `exclude`) another run could claim now (`endpoints_claim`'s
    filter, without locking or leasing): whether lingering runs should give their threads back."""
    now = timezone.now()
    due = WebhookDelivery.objects.filter(
        endpoint_id=OuterRef("pk"), status=DeliveryStatus.PENDING, next_attempt_at__lte=now
    )
    with transaction.atomic():
        plan_for_values_in_transaction()
        return len(
            WebhookEndpoint.objects.filter(is_active=True, retry_at__lte=now)
            .filter(Q(leased_until__isnull=True) | Q(leased_until__lt=now))
            .exclude(pk__in=list(exclude))
            .filter(Exists(due))
            .values_list("pk", flat=True)[:limit]
        )


def _wait(wake: threading.Event, timeout: float, should_stop: Callable[[], bool]) -> None:
    """Sleep until `wake` is set or `timeout` passes, looking at `should_stop()` every 0.25 s (a stop request
    sets no event)."""
    end = time.monotonic() + max(0.0, timeout)
    while not wake.wait(max(0.0, min(0.25, end - time.monotonic()))):
        if should_stop() or time.monotonic() >= end:
            return


def _remember_session(pids: set[int]) -> None:
    raw = getattr(connection, "connection", None)
    pid = getattr(getattr(raw, "info", None), "backend_pid", None)
    if pid:
        pids.add(int(pid))


class _Listener:
    """LISTEN keel_events and keel_webhooks on a connection of its own, in a thread of its own: each
    notification sets `wake` at once (no polling). A `keel_webhooks` from one of `ignore_pids` (this loop's own
    sequencer) is skipped: the loop already woke the runs it concerns. A lost connection (PostgreSQL restarted,
    the session terminated) is reopened every 0.5 s until it is back; meanwhile the loop's idle pass goes on."""

    def __init__(self, wake: threading.Event, *, ignore_pids: set[int]) -> None:
        from apps.partners.webhooks.events import NOTIFY_CHANNEL

        params = connection.get_connection_params()
        for name in ("cursor_factory", "context", "pool"):
            params.pop(name, None)
        self._params = params
        self._connection = self._open()  # the first one fails loudly: the command cannot listen at all
        self._wake, self._ignore, self._channel = wake, ignore_pids, NOTIFY_CHANNEL
        self._foreign = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._listen, name="webhooks-listener", daemon=True)
        self._thread.start()

    def _open(self) -> Any:
        import psycopg

        from apps.partners.webhooks.events import EVENTS_CHANNEL, NOTIFY_CHANNEL

        conn = psycopg.connect(autocommit=True, **self._params)
        conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        conn.execute(f"LISTEN {EVENTS_CHANNEL}")
        return conn

    def _listen(self) -> None:
        while not self._stopping.is_set():
            try:
                if self._connection is None:
                    self._connection = self._open()
                    self._wake.set()  # notifications may have been missed while it was gone: look now
                for notify in self._connection.notifies(timeout=0.25):
                    if notify.channel == self._channel:
                        if notify.pid in self._ignore:
                            continue
                        self._foreign = True
                    self._wake.set()
            except Exception:
                if self._stopping.is_set():
                    return
                log.warning("webhooks.listener_failed", exc_info=True)
                with contextlib.suppress(Exception):
                    if self._connection is not None:
                        self._connection.close()
                self._connection = None
                self._foreign = True  # what was missed is unknown: runs query again
                self._wake.set()
                self._stopping.wait(0.5)

    def take_foreign(self) -> bool:
        """Whether another session (another dispatcher's or a task's sequencer, a redelivery) queued deliveries
        since the last call."""
        foreign, self._foreign = self._foreign, False
        return foreign

    def close(self) -> None:
        self._stopping.set()
        self._thread.join(timeout=2)
        if self._connection is not None:
            self._connection.close()


NUDGE_FLAG = "webhooks:dispatch-queued"
_warn_nudge_failed = WarnAtMostEvery(log, "webhooks.nudge_failed")  # one a minute while Redis is down


def dispatcher_nudge() -> None:
    """After a commit that wrote events or deliveries: queue one Celery dispatch run (collapsed by a cache
    flag); beat runs one every second anyway, and a `webhook_dispatch` process is woken by NOTIFY."""
    if not settings.WEBHOOKS["NUDGE_ON_COMMIT"]:
        return
    from apps.partners.tasks import webhooks_dispatch

    try:
        if cache.add(NUDGE_FLAG, 1, timeout=2):
            # A nudge nobody picked up within 5 s is stale: beat has queued a newer run by then.
            webhooks_dispatch.apply_async(queue="webhooks", retry=False, expires=5)
    except Exception:
        _warn_nudge_failed(exc_info=True)
