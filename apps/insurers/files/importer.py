"""Importing insurers' result files (SPEC §8, ADR 0028), run on a beat schedule and by tests.

A result file is `<name>.jsonl` (one `{idempotency_key, outcome: confirmed|rejected, insurer_reference?,
reason?, endorsement_id?}` per line) with its manifest `<name>.manifest.json` (`schema_version` =
`keel.endorsements.results.v1`, `insurer`, `file`, `row_count`, `sha256`, `batch_id`, `created_at`).
Only manifests are listed, so a file whose manifest has not arrived yet is left for a later run.

Per manifest (`result_file_import`):
1. read the manifest and the data file it names; a read error leaves both for the next run;
2. verify: schema version, insurer code, SHA-256 of the data bytes, row count, and every row's shape — any
   mismatch **quarantines** the file: a `ResultFile(status=quarantined, error=…)` row (operators see it in the
   admin and in the job-run log) and nothing of it is applied;
3. in one transaction: claim the file by inserting its `ResultFile` row (unique insurer + name + SHA-256: a file
   seen before, or one a concurrent importer is applying, is skipped) and apply its rows like a callback:
   update our submission log and enqueue `insurer.results_received` in chunks, consumed by the endorsements
   app (rows naming nothing this insurer was sent are counted, not applied; a result equal to the one already
   recorded is not published again);
4. after commit, move the files to `imported/`, `quarantine/` or `duplicates/` (best effort: the claim row,
   not the move, is what makes the import happen once).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from django.db import IntegrityError, connection, transaction
from django.db.models import Q
from django.db.models.expressions import RawSQL
from django.utils import timezone

from apps.audit.services import insurer_exchange_record, job_run
from apps.common import bulk
from apps.insurers.classification import classify_insurer_error
from apps.insurers.contracts import InsurerConfigurationError, InsurerTopic
from apps.insurers.credentials import decrypt_credentials
from apps.insurers.files.storage import FileLocation, StorageError, check_name, location_for
from apps.insurers.gateways.file import MANIFEST_SUFFIX, RESULT_SCHEMA_VERSION
from apps.insurers.models import (
    Insurer,
    InsurerProtocol,
    InsurerSubmission,
    ResultFile,
    ResultFileStatus,
)
from apps.outbox.services import outbox_enqueue

log = structlog.get_logger(__name__)
EVENT_CHUNK = 2000  # results per `insurer.results_received` event: one endorsements transaction each
LOOKUP_CHUNK = 5000
UPDATE_CHUNK = 5000
OUTCOMES = ("confirmed", "rejected")
MAX_FILE_BYTES = 256 * 1024 * 1024


class QuarantineError(ValueError):
    """The file does not match its manifest or the result schema."""


@dataclass(frozen=True)
class ResultRow:
    idempotency_key: str
    outcome: str
    insurer_reference: str
    reason: str


def parse_rows(content: bytes) -> list[ResultRow]:
    rows: list[ResultRow] = []
    for number, line in enumerate(content.splitlines(), start=1):
        try:
            raw = json.loads(line)
        except ValueError as exc:
            raise QuarantineError(f"line {number} is not JSON") from exc
        if not isinstance(raw, dict):
            raise QuarantineError(f"line {number} is not a JSON object")
        key, outcome = raw.get("idempotency_key"), raw.get("outcome")
        if not isinstance(key, str) or not 0 < len(key) <= 255:
            raise QuarantineError(f"line {number}: idempotency_key must be a string of 1-255 characters")
        if outcome not in OUTCOMES:
            raise QuarantineError(f"line {number}: outcome must be one of {', '.join(OUTCOMES)}")
        reference, reason = raw.get("insurer_reference") or "", raw.get("reason") or ""
        if not isinstance(reference, str) or not isinstance(reason, str):
            raise QuarantineError(f"line {number}: insurer_reference and reason must be strings")
        rows.append(ResultRow(key, outcome, reference[:120], reason[:500]))
    return rows


def verify(*, insurer_code: str, manifest: Any, content: bytes) -> list[ResultRow]:
    """Check a data file against its manifest; the parsed rows, or `QuarantineError` saying what is wrong."""
    if not isinstance(manifest, dict):
        raise QuarantineError("manifest is not a JSON object")
    if manifest.get("schema_version") != RESULT_SCHEMA_VERSION:
        raise QuarantineError(f"schema_version {manifest.get('schema_version')!r} is not {RESULT_SCHEMA_VERSION!r}")
    if manifest.get("insurer") != insurer_code:
        raise QuarantineError(f"manifest names insurer {manifest.get('insurer')!r}, not {insurer_code!r}")
    digest = hashlib.sha256(content).hexdigest()
    if manifest.get("sha256") != digest:
        raise QuarantineError(f"checksum mismatch: manifest sha256 {manifest.get('sha256')!r}, file has {digest}")
    rows = parse_rows(content)
    if manifest.get("row_count") != len(rows):
        raise QuarantineError(f"row count mismatch: manifest says {manifest.get('row_count')!r}, file has {len(rows)}")
    return rows


# long: one pass of chunked reads, in-place bookkeeping and chunked writes over the same `known` map; split,
# the map and the counters would travel through every piece.
def _apply_rows(insurer: Insurer, rows: Sequence[ResultRow], *, source: str) -> tuple[int, int]:
    """Record the rows in our submission log and publish them; (applied, unknown). Caller's transaction.

    Row by row exactly as a callback would (a row naming nothing sent to this insurer is counted, not applied;
    a result equal to the one already recorded — a duplicate line, a re-sent file — is not published again),
    but set-based: one read of the log per `LOOKUP_CHUNK` keys, one UPDATE per `UPDATE_CHUNK` changed rows,
    one `insurer.results_received` event per `EVENT_CHUNK` results."""
    keys = list(dict.fromkeys(r.idempotency_key for r in rows))
    is_pg = connection.vendor == "postgresql"
    # key → [pk, endorsement_id, last_outcome, insurer_reference]; updated in place so a later line of the same
    # key sees what an earlier one recorded (as a second callback would).
    known: dict[str, list[Any]] = {}
    for start in range(0, len(keys), LOOKUP_CHUNK):
        chunk = keys[start : start + LOOKUP_CHUNK]
        # PostgreSQL: one array parameter (`= ANY`) rather than one placeholder per key.
        match = (
            Q(idempotency_key__in=RawSQL("SELECT unnest(%s::text[])", [chunk]))
            if is_pg
            else Q(idempotency_key__in=chunk)
        )
        found = InsurerSubmission.objects.filter(match, insurer=insurer).values_list(
            "idempotency_key", "pk", "endorsement_id", "last_outcome", "insurer_reference"
        )
        known.update(
            (key, [pk, endorsement_id, outcome, reference]) for key, pk, endorsement_id, outcome, reference in found
        )
    now = timezone.now()
    changed: dict[int, tuple[str, str, str, str]] = {}  # pk → (outcome, reference, class, reason), last wins
    results: list[dict[str, Any]] = []
    unknown = 0
    for row in rows:
        sub = known.get(row.idempotency_key)
        if sub is None:
            unknown += 1
            continue
        pk, endorsement_id, last_outcome, last_reference = sub
        rejection_class = classify_insurer_error(row.reason).value if row.outcome == "rejected" else ""
        reason = (row.reason or "Rejected by the insurer without a reason.") if row.outcome == "rejected" else ""
        reference = row.insurer_reference or last_reference
        if last_outcome == row.outcome and last_reference == reference:
            continue  # this result is already recorded (and was published when it was)
        sub[2], sub[3] = row.outcome, reference
        changed[pk] = (row.outcome, reference, rejection_class, reason)
        results.append(
            {
                "endorsement_id": endorsement_id,
                "outcome": row.outcome,
                "insurer_reference": reference or None,
                "rejection_class": rejection_class or None,
                "rejection_reason": reason or None,
                "idempotency_key": row.idempotency_key,
            }
        )
    _log_update(changed, responded_at=now)
    for start in range(0, len(results), EVENT_CHUNK):
        outbox_enqueue(
            topic=InsurerTopic.RESULTS_RECEIVED,
            payload={"insurer": insurer.code, "source": source, "results": results[start : start + EVENT_CHUNK]},
            key=f"results:{insurer.code}",
        )
    return len(results), unknown


def _log_update(changed: dict[int, tuple[str, str, str, str]], *, responded_at: datetime) -> None:
    """Write the changed submission-log rows: on PostgreSQL one `UPDATE … FROM unnest(binary arrays)` per
    `UPDATE_CHUNK` rows; elsewhere (SQLite in `make run`) Django's bulk update."""
    items = sorted(changed.items())
    if connection.vendor != "postgresql":
        bulk.bulk_update(
            [
                InsurerSubmission(
                    pk=pk,
                    last_outcome=outcome,
                    insurer_reference=reference,
                    rejection_class=rejection_class,
                    rejection_reason=reason,
                    responded_at=responded_at,
                )
                for pk, (outcome, reference, rejection_class, reason) in items
            ],
            ["last_outcome", "insurer_reference", "rejection_class", "rejection_reason", "responded_at"],
        )
        return
    table = connection.ops.quote_name(InsurerSubmission._meta.db_table)
    sql = (
        f"UPDATE {table} AS s SET last_outcome = v.outcome, insurer_reference = v.reference, "  # noqa: S608
        "rejection_class = v.rejection_class, rejection_reason = v.reason, responded_at = %s "
        "FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::text[], %b::text[]) "
        "AS v(id, outcome, reference, rejection_class, reason) WHERE s.id = v.id"
    )
    with connection.cursor() as cursor:
        for start in range(0, len(items), UPDATE_CHUNK):
            chunk = items[start : start + UPDATE_CHUNK]
            columns = list(zip(*[(pk, *values) for pk, values in chunk], strict=True))
            cursor.execute(sql, [responded_at, *(list(c) for c in columns)])


def _claim(insurer: Insurer, **fields: Any) -> ResultFile | None:
    """Insert the file's claim row in a savepoint; None when this file was handled before (or just now)."""
    try:
        with transaction.atomic():
            return ResultFile.objects.create(insurer=insurer, imported_at=timezone.now(), **fields)
    except IntegrityError:
        return None


# long: the import steps of the module docstring in their order, each a short guarded block (read, verify,
# claim, apply, move); one function keeps the quarantine paths visible together.
def result_file_import(insurer: Insurer, inbound: FileLocation, manifest_name: str) -> str:
    """Import one result file (steps in the module docstring); returns imported | quarantined | duplicate |
    unreadable."""
    try:
        raw_manifest = inbound.read(manifest_name)
    except StorageError:
        return "unreadable"  # vanished (moved by a concurrent importer) or not readable now: next run
    data_name, content, manifest = manifest_name, raw_manifest, None
    try:
        manifest = json.loads(raw_manifest)
        named = manifest.get("file") if isinstance(manifest, dict) else None
        if not isinstance(named, str):
            raise QuarantineError("manifest has no `file`")
        try:
            data_name = check_name(named)
        except ValueError as exc:
            raise QuarantineError(f"manifest names an unsafe file {named!r}") from exc
        try:
            content = inbound.read(data_name)
        except StorageError:
            return "unreadable"
        if len(content) > MAX_FILE_BYTES:
            raise QuarantineError(f"file is larger than {MAX_FILE_BYTES} bytes")
        rows = verify(insurer_code=insurer.code, manifest=manifest, content=content)
        error = ""
    except (ValueError, QuarantineError) as exc:  # json errors are ValueErrors
        rows, error = [], str(exc)[:1000] if isinstance(exc, QuarantineError) else f"manifest is not JSON: {exc}"
    sha = hashlib.sha256(content).hexdigest()
    common = {
        "name": data_name,
        "sha256": sha,
        "batch_id": str((manifest or {}).get("batch_id") or "")[:100] if isinstance(manifest, dict) else "",
        "manifest": manifest if isinstance(manifest, dict) else None,
    }
    with transaction.atomic():
        if error:
            claimed = _claim(insurer, status=ResultFileStatus.QUARANTINED, error=error, row_count=0, **common)
            outcome = "quarantined" if claimed else "duplicate"
        else:
            claimed = _claim(insurer, status=ResultFileStatus.IMPORTED, row_count=len(rows), **common)
            outcome = "imported" if claimed else "duplicate"
            if claimed is not None:
                applied, unknown = _apply_rows(insurer, rows, source=f"file:{data_name}:{sha[:12]}")
                ResultFile.objects.filter(pk=claimed.pk).update(applied_count=applied, unknown_count=unknown)
    insurer_exchange_record(
        insurer_code=insurer.code,
        operation="endorsements.result_file_import",
        direction="inbound",
        endpoint=f"{inbound.describe()}/{data_name}",
        request_body=manifest if isinstance(manifest, dict) else None,
        response_body={"outcome": outcome, "rows": len(rows)},
        error=error,
    )
    if error:
        log.warning("insurers.result_file_quarantined", insurer=insurer.code, file=data_name, error=error)
    folder = {"imported": "imported", "quarantined": "quarantine", "duplicate": "duplicates"}[outcome]
    for name in dict.fromkeys([data_name, manifest_name]):
        try:
            inbound.move(name, folder)
        except (StorageError, ValueError):
            log.info("insurers.result_file_move_failed", insurer=insurer.code, file=name)
    return outcome


def result_files_import(*, insurer_code: str | None = None) -> Counter[str]:
    """Import every waiting result file of one file insurer, or of all active ones. Returns counts by outcome
    (plus `unreachable` / `configuration` per insurer whose inbound folder cannot be used now / at all).
    A run that finds files (or a problem) is recorded as a job run; an idle tick (every few seconds) is not."""
    insurers = Insurer.objects.filter(protocol=InsurerProtocol.FILE, is_active=True)
    if insurer_code is not None:
        insurers = insurers.filter(code=insurer_code)
    counts: Counter[str] = Counter()
    waiting: list[tuple[Insurer, FileLocation, list[str]]] = []
    for insurer in insurers:
        try:
            credentials = decrypt_credentials(insurer.credentials, insurer_code=insurer.code)
            inbound = location_for(
                insurer.inbound_folder, credentials=credentials, what=f"Insurer {insurer.code!r} inbound folder"
            )
            names = inbound.list_names(MANIFEST_SUFFIX)
        except StorageError as exc:
            log.warning("insurers.inbound_unreachable", insurer=insurer.code, error=str(exc))
            counts["unreachable"] += 1
            continue
        except InsurerConfigurationError as exc:  # one misconfigured insurer must not stop the others
            log.warning("insurers.inbound_misconfigured", insurer=insurer.code, error=str(exc))
            counts["configuration"] += 1
            continue
        if names:
            waiting.append((insurer, inbound, names))
    if not waiting and not counts:
        return counts
    with job_run("insurers.result_files_import", params={"insurer": insurer_code or "*"}) as run:
        for insurer, inbound, names in waiting:
            for name in names:
                counts[result_file_import(insurer, inbound, name)] += 1
        run.counts = dict(counts)
    return counts
