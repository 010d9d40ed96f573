"""Hash-chain sealing and verification of the audit streams (docs/adr/0003-audit-hash-chain.md).

Writers only INSERT events. The sealer (beat, every 10 s) appends `AuditSeal` rows:

1. lock the stream's `AuditChainHead` row (only sealers ever lock it, so writers never wait);
2. read unsealed events of the stream in id order (bounded batch) — events commit out of id order, so the
   chain order is the *seal* order, not the id order, and a late-committing event is simply sealed later;
3. for each: hash = sha256(prev_hash ‖ canonical JSON of the event), insert the seal with the next seq;
4. move the head to the last seq/hash and commit.

`audit_verify` walks the seals of each stream in seq order and recomputes every link: a changed event breaks
its own hash, a deleted event leaves a seal without an event, a deleted or altered seal breaks the chain, and
an event that stays unsealed longer than the grace period means a seal was removed or a row was slipped in
behind the sealer. Dropping the newest events *and* their seals together is only detectable against an
externally kept head hash, which `audit_verify` prints for operators to store.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.db import models, transaction
from django.utils import timezone

from apps.audit.models import STREAM_MODELS, AuditChainHead, AuditSeal
from apps.audit.services import jsonable

GENESIS = "0" * 64
SEAL_BATCH = 2000


def canonical(event: models.Model) -> bytes:
    data: dict[str, Any] = {}
    for f in event._meta.concrete_fields:
        value = getattr(event, f.attname)
        data[f.attname] = jsonable(value)
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()


def link_hash(prev_hash: str, event: models.Model) -> str:
    return hashlib.sha256(prev_hash.encode() + b"|" + canonical(event)).hexdigest()


def seal_stream(stream: str, *, batch_size: int = SEAL_BATCH) -> int:
    """Seal up to `batch_size` unsealed events of one stream; returns how many were sealed."""
    model = STREAM_MODELS[stream]
    with transaction.atomic():
        AuditChainHead.objects.get_or_create(stream=stream)
        head = AuditChainHead.objects.select_for_update().get(stream=stream)
        sealed_ids = AuditSeal.objects.filter(stream=stream).values("event_id")
        events = list(model.objects.exclude(pk__in=sealed_ids).order_by("pk")[:batch_size])
        if not events:
            return 0
        seq, prev = head.seq, head.last_hash
        now = timezone.now()
        seals = []
        for event in events:
            seq += 1
            digest = link_hash(prev, event)
            seals.append(AuditSeal(stream=stream, seq=seq, event_id=event.pk, prev_hash=prev, hash=digest,
                                   sealed_at=now))
            prev = digest
        AuditSeal.objects.bulk_create(seals)
        AuditChainHead.objects.filter(pk=head.pk).update(seq=seq, last_hash=prev, updated_at=now)
        return len(seals)


def seal_all() -> dict[str, int]:
    counts: dict[str, int] = {}
    for stream in STREAM_MODELS:
        total = 0
        while sealed := seal_stream(stream):
            total += sealed
        counts[stream] = total
    return counts


@dataclass
class StreamReport:
    stream: str
    sealed: int = 0
    unsealed_recent: int = 0
    head_hash: str = GENESIS
    problems: list[str] = field(default_factory=list)


@dataclass
class VerifyReport:
    streams: list[StreamReport]

    @property
    def ok(self) -> bool:
        return not any(s.problems for s in self.streams)


def audit_verify(*, stream: str | None = None, grace: timedelta = timedelta(minutes=10)) -> VerifyReport:
    reports = []
    for name, model in STREAM_MODELS.items():
        if stream and name != stream:
            continue
        report = StreamReport(stream=name)
        prev = GENESIS
        expected_seq = 1
        sealed_ids: set[int] = set()
        seals = AuditSeal.objects.filter(stream=name).order_by("seq")
        for chunk_start in range(0, seals.count(), 5000):
            chunk = list(seals[chunk_start : chunk_start + 5000])
            events = {e.pk: e for e in model.objects.filter(pk__in=[s.event_id for s in chunk])}
            for seal in chunk:
                if seal.seq != expected_seq:
                    report.problems.append(f"seal #{expected_seq} is missing (chain jumps to #{seal.seq})")
                    expected_seq = seal.seq
                if seal.prev_hash != prev:
                    report.problems.append(f"seal #{seal.seq} does not follow the previous seal (chain broken)")
                event = events.get(seal.event_id)
                if event is None:
                    report.problems.append(f"event {seal.event_id} (seal #{seal.seq}) has been removed")
                elif link_hash(seal.prev_hash, event) != seal.hash:
                    report.problems.append(f"event {seal.event_id} (seal #{seal.seq}) has been modified")
                sealed_ids.add(seal.event_id)
                prev = seal.hash
                expected_seq += 1
                report.sealed += 1
        report.head_hash = prev
        cutoff = timezone.now() - grace
        unsealed = model.objects.exclude(pk__in=sealed_ids) if sealed_ids else model.objects.all()
        stale = list(unsealed.filter(created_at__lt=cutoff).values_list("pk", flat=True)[:20])
        if stale:
            report.problems.append(
                f"{len(stale)}+ event(s) older than the grace period are unsealed (a seal was removed or a row "
                f"was inserted behind the sealer): ids {stale[:10]}"
            )
        report.unsealed_recent = unsealed.filter(created_at__gte=cutoff).count()
        reports.append(report)
    return VerifyReport(streams=reports)
