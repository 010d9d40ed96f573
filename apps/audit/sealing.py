"""Hash-chain sealing and verification of the audit streams (docs/adr/0003-audit-hash-chain.md).

Writers only INSERT events and never touch the chain, so they never wait on a lock. The sealer (the
`audit.seal` beat task every 10 s, or `manage.py audit_seal`) appends `AuditSeal` rows to each stream's chain:

1. lock the stream's `AuditChainHead` row with SELECT … FOR UPDATE. Only sealers lock it: two sealers
   serialise on it, writers are unaffected;
2. read the stream's unsealed events above the head's floor in id order, in a bounded batch. Events commit
   out of id order, so the chain order is the *seal* order, not the id order: an event that commits late
   (after higher ids were sealed) is simply sealed later, with a higher seq;
3. for each event: hash = sha256(version | stream | seq | prev_hash | canonical JSON of the event), insert
   the seal with the next seq;
4. move the head (seq, last hash, floor) and commit. Seals, head and floor commit together.

The floor keeps step 2 cheap on large tables: every event with id <= floor is known to be sealed. It only
advances past events created more than `AUDIT_SEAL_SETTLE_SECONDS` (default 1 h) ago, on the assumption
that no transaction inserting an audit row stays open that long (PostgreSQL's `idle_in_transaction_session_
timeout` / `statement_timeout` enforce it in production). An event that commits below the floor anyway is
never sealed by the periodic run, and `audit_verify` reports it like any other stale unsealed row;
`audit_seal --full-scan` seals it after an operator has looked at it.

`audit_verify` walks each chain in seq order and recomputes every link: a changed event breaks its own hash,
a deleted event leaves a seal without an event, a deleted or altered seal breaks the chain or disagrees with
the head, and an event that stays unsealed longer than the grace period means a seal was removed or a row
was slipped in behind the sealer. Removing the newest events *and* their seals *and* rewinding the head is
only detectable against an externally kept head, which `audit_verify` prints and can check (`--expect-head`).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import models, transaction
from django.db.models import Exists, Max, OuterRef
from django.utils import timezone

from apps.audit.models import STREAM_MODELS, AuditChainHead, AuditSeal, AuditStream

GENESIS = "0" * 64
HASH_VERSION = 1
SEAL_BATCH = 2000
# One beat run seals at most this many batches per stream, so a run under a flood still ends.
SEAL_MAX_BATCHES = 50
VERIFY_CHUNK = 1000
MAX_PROBLEMS_LISTED = 100
DEFAULT_GRACE = timedelta(minutes=10)

# The fields each stream's hash covers (plus the event id), frozen per HASH_VERSION. Adding a column to a
# stream does not change the hashes of sealed events; covering a new column needs HASH_VERSION 2 (and
# `link_hash` keeping version 1 for the old seals).
SEALED_FIELDS: dict[str, tuple[str, ...]] = {
    AuditStream.AUDIT: (
        "actor",
        "actor_kind",
        "partner_id",
        "action",
        "object_type",
        "object_id",
        "employer_id",
        "before",
        "after",
        "request_id",
        "ip",
        "created_at",
    ),
    AuditStream.PII: (
        "actor",
        "actor_kind",
        "subject_type",
        "subject_id",
        "field",
        "action",
        "purpose",
        "request_id",
        "created_at",
    ),
    AuditStream.INSURER: (
        "insurer_code",
        "operation",
        "direction",
        "endpoint",
        "request_body",
        "response_status",
        "response_body",
        "duration_ms",
        "error",
        "endorsement_id",
        "correlation_id",
        "created_at",
    ),
    AuditStream.JOB: ("run_id", "job", "phase", "status", "params", "counts", "error", "created_at"),
}


# --- Hashing ----------------------------------------------------------------------------------------------


def _canonical_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat() if timezone.is_aware(value) else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, (Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical_value(v) for v in value]
    return value


def canonical(stream: str, event: models.Model) -> bytes:
    """The event as compact JSON with sorted keys: the same row always gives the same bytes."""
    data = {name: _canonical_value(getattr(event, name)) for name in SEALED_FIELDS[stream]}
    data["id"] = event.pk
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def link_hash(*, stream: str, seq: int, prev_hash: str, event: models.Model, version: int = HASH_VERSION) -> str:
    if version != HASH_VERSION:
        raise ValueError(f"unknown seal version {version}")
    header = f"v{version}|{stream}|{seq}|{prev_hash}|".encode()
    return hashlib.sha256(header + canonical(stream, event)).hexdigest()


# --- Sealing ----------------------------------------------------------------------------------------------


def _settle_window() -> timedelta:
    return timedelta(seconds=getattr(settings, "AUDIT_SEAL_SETTLE_SECONDS", 3600))


def _unsealed(stream: str) -> models.QuerySet[Any]:
    model = STREAM_MODELS[stream]
    sealed = AuditSeal.objects.filter(stream=stream, event_id=OuterRef("pk"))
    return model._default_manager.filter(~Exists(sealed))


def seal_stream(stream: str, *, batch_size: int = SEAL_BATCH, full_scan: bool = False) -> int:
    """Seal up to `batch_size` unsealed events of one stream; returns how many were sealed.

    Steps (see the module docstring for why this never blocks writers):
    1. lock the chain head (sealers only);
    2. find the newest settled event id (created before the settle window) — computed *before* the scan, so
       an event committing between the two queries is seen by the scan;
    3. scan unsealed events with id > floor (or from 0 with `full_scan`) in id order, `batch_size` at most;
    4. chain them: each seal's hash covers the previous hash, its stream, seq and the canonical event;
    5. raise the floor to the highest id below which everything visible is sealed *and* settled, and move
       the head. Everything commits in one transaction with the seals.
    """
    model = STREAM_MODELS[stream]
    with transaction.atomic():
        AuditChainHead.objects.get_or_create(stream=stream)
        head = AuditChainHead.objects.select_for_update().get(stream=stream)
        now = timezone.now()
        floor = 0 if full_scan else head.floor_event_id
        settled_max: int | None = (
            model._default_manager.filter(pk__gt=head.floor_event_id, created_at__lt=now - _settle_window())
            .order_by()
            .aggregate(m=Max("pk"))["m"]
        )
        events = list(_unsealed(stream).filter(pk__gt=floor).order_by("pk")[:batch_size])

        seq, prev = head.seq, head.last_hash
        seals = []
        for event in events:
            seq += 1
            digest = link_hash(stream=stream, seq=seq, prev_hash=prev, event=event)
            seals.append(
                AuditSeal(
                    stream=stream,
                    seq=seq,
                    event_id=event.pk,
                    prev_hash=prev,
                    hash=digest,
                    version=HASH_VERSION,
                    sealed_at=now,
                )
            )
            prev = digest
        AuditSeal.objects.bulk_create(seals)

        # Everything visible above the floor is sealed up to the last event of a full batch, or entirely
        # when the batch was not full. A full scan proves nothing about the floor, so it leaves it alone.
        new_floor = head.floor_event_id
        if settled_max is not None and not full_scan:
            sealed_up_to = events[-1].pk if len(events) == batch_size else settled_max
            new_floor = max(new_floor, min(settled_max, sealed_up_to))
        if seals or new_floor != head.floor_event_id:
            AuditChainHead.objects.filter(pk=head.pk).update(
                seq=seq, last_hash=prev, floor_event_id=new_floor, updated_at=now
            )
        return len(seals)


def seal_all(
    *,
    stream: str | None = None,
    batch_size: int = SEAL_BATCH,
    max_batches: int = SEAL_MAX_BATCHES,
    full_scan: bool = False,
) -> dict[str, int]:
    """Seal every stream (or one) until it is caught up or `max_batches` batches were sealed."""
    counts: dict[str, int] = {}
    for name in STREAM_MODELS:
        if stream and name != stream:
            continue
        total = 0
        for _ in range(max_batches):
            sealed = seal_stream(name, batch_size=batch_size, full_scan=full_scan)
            total += sealed
            if sealed < batch_size:
                break
        counts[name] = total
    return counts


# --- Verification -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    kind: str  # modified | removed | chain_broken | head_mismatch | unsealed
    message: str
    event_id: int | None = None
    seq: int | None = None

    def __str__(self) -> str:
        return self.message


@dataclass
class StreamReport:
    stream: str
    sealed: int = 0
    unsealed_recent: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0

    @property
    def ok(self) -> bool:
        return self.problem_count == 0

    def add(self, problem: Problem) -> None:
        self.problem_count += 1
        if len(self.problems) < MAX_PROBLEMS_LISTED:
            self.problems.append(problem)


@dataclass
class VerifyReport:
    streams: list[StreamReport]

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.streams)

    def stream(self, name: str) -> StreamReport:
        return next(s for s in self.streams if s.stream == name)


def _verify_stream(
    name: str, *, grace: timedelta, expected_head: tuple[int, str] | None, now: datetime
) -> StreamReport:
    """Verify one stream in three named steps, problems reported in this order: walk the chain of seals, compare
    its end with the head row (and the externally kept head), then list events left unsealed past `grace`."""
    report = StreamReport(stream=name)
    # Read the head first: seals and head commit together, so every seal up to this head is visible below
    # even while a sealer keeps extending the chain.
    head = AuditChainHead.objects.filter(stream=name).first()
    last_seq, prev = _verify_chain(name, report, expected_head=expected_head)
    report.head_seq, report.head_hash = last_seq, prev
    _verify_head(name, report, head=head, last_seq=last_seq, expected_head=expected_head)
    _verify_unsealed(name, report, cutoff=now - grace)
    return report


def _verify_chain(name: str, report: StreamReport, *, expected_head: tuple[int, str] | None) -> tuple[int, str]:
    """Walk the stream's seals in `seq` order (chunked), checking each against the previous seal and its event;
    returns the last seal's (seq, hash), `(0, GENESIS)` for an empty chain."""
    model = STREAM_MODELS[name]
    prev, last_seq, expected_seq = GENESIS, 0, 1
    while True:
        chunk = list(AuditSeal.objects.filter(stream=name, seq__gt=last_seq).order_by("seq")[:VERIFY_CHUNK])
        if not chunk:
            break
        events = {e.pk: e for e in model._default_manager.filter(pk__in=[s.event_id for s in chunk])}
        for seal in chunk:
            _verify_seal(name, report, seal, event=events.get(seal.event_id), prev=prev, expected_seq=expected_seq)
            if expected_head and seal.seq == expected_head[0] and seal.hash != expected_head[1]:
                report.add(
                    Problem("head_mismatch", f"seal #{seal.seq} differs from the externally kept head", seq=seal.seq)
                )
            prev, last_seq, expected_seq = seal.hash, seal.seq, seal.seq + 1
            report.sealed += 1
    return last_seq, prev


def _verify_seal(name: str, report: StreamReport, seal: AuditSeal, *, event: Any, prev: str, expected_seq: int) -> None:
    """One seal: no gap before it, it links to the previous seal, its event exists and still hashes to it."""
    if seal.seq != expected_seq:
        report.add(
            Problem(
                "chain_broken",
                f"seal(s) #{expected_seq}..#{seal.seq - 1} are missing (chain jumps to #{seal.seq})",
                seq=seal.seq,
            )
        )
    if seal.prev_hash != prev:
        report.add(
            Problem(
                "chain_broken",
                f"seal #{seal.seq} does not link to the previous seal (chain broken)",
                event_id=seal.event_id,
                seq=seal.seq,
            )
        )
    if event is None:
        report.add(
            Problem(
                "removed",
                f"event {seal.event_id} (seal #{seal.seq}) has been removed",
                event_id=seal.event_id,
                seq=seal.seq,
            )
        )
    elif link_hash(stream=name, seq=seal.seq, prev_hash=seal.prev_hash, event=event, version=seal.version) != (
        seal.hash
    ):
        report.add(
            Problem(
                "modified",
                f"event {seal.event_id} (seal #{seal.seq}) has been modified, or its seal has",
                event_id=seal.event_id,
                seq=seal.seq,
            )
        )


def _verify_head(
    name: str,
    report: StreamReport,
    *,
    head: AuditChainHead | None,
    last_seq: int,
    expected_head: tuple[int, str] | None,
) -> None:
    """The chain's last seal against the head row, then against the externally kept head."""
    if head is not None and head.seq > last_seq:
        report.add(
            Problem("head_mismatch", f"the chain head is at #{head.seq} but the last seal is #{last_seq}", seq=head.seq)
        )
    elif head is not None and head.seq:
        head_seal = AuditSeal.objects.filter(stream=name, seq=head.seq).values_list("hash", flat=True).first()
        if head_seal != head.last_hash:
            report.add(Problem("head_mismatch", f"seal #{head.seq} does not match the chain head's hash", seq=head.seq))
    elif head is None and last_seq:
        report.add(Problem("head_mismatch", "seals exist but the chain head row is gone"))
    if expected_head and expected_head[0] > last_seq:
        report.add(
            Problem(
                "head_mismatch",
                f"the externally kept head is #{expected_head[0]} but the last seal is #{last_seq} "
                f"(newest events and seals removed)",
            )
        )


def _verify_unsealed(name: str, report: StreamReport, *, cutoff: datetime) -> None:
    """Events created before `cutoff` without a seal (listed up to `MAX_PROBLEMS_LISTED`, the rest counted), and
    how many newer ones the sealer has yet to reach."""
    stale = _unsealed(name).filter(created_at__lt=cutoff)
    stale_ids = list(stale.order_by("pk").values_list("pk", flat=True)[:MAX_PROBLEMS_LISTED])
    if stale_ids:
        for event_id in stale_ids:
            report.add(
                Problem(
                    "unsealed",
                    f"event {event_id} is older than the grace period and unsealed (a seal was removed, or the "
                    f"row was inserted behind the sealer)",
                    event_id=event_id,
                )
            )
        if len(stale_ids) == MAX_PROBLEMS_LISTED:
            report.problem_count += stale.count() - len(stale_ids)
    report.unsealed_recent = _unsealed(name).filter(created_at__gte=cutoff).count()


def audit_verify(
    stream: str | None = None,
    *,
    grace: timedelta = DEFAULT_GRACE,
    expected_heads: Mapping[str, tuple[int, str]] | None = None,
) -> VerifyReport:
    """Recompute every stream's chain (or one stream's) and list what does not match. Seals nothing.

    `expected_heads` maps a stream to a (seq, hash) an operator stored earlier from this report; the chain
    must still contain that seal unchanged — the only defence against removing the newest rows, their seals
    and rewinding the head together.
    """
    if stream is not None and stream not in STREAM_MODELS:
        raise ValueError(f"unknown audit stream {stream!r}")
    now = timezone.now()
    heads = expected_heads or {}
    return VerifyReport(
        streams=[
            _verify_stream(name, grace=grace, expected_head=heads.get(name), now=now)
            for name in STREAM_MODELS
            if stream is None or name == stream
        ]
    )
