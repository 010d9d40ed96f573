"""Importing insurers' result files (SPEC §8, ADR 0028), run on a beat schedule and by tests.

A result file is `<name>.jsonl` (one `{idempotency_key, outcome: confirmed|rejected, insurer_reference?,
reason?, endorsement_id?}` per line) with its manifest `<name>.manifest.json` (`schema_version` =
`keel.endorsements.results.v1`, `insurer`, `file`, `row_count`, `sha256`, `batch_id`, `created_at`).
Only manifests are listed, so a file whose manifest has not arrived yet is left for a later run.

Per manifest (`result_file_import`):
1. read the manifest and the data file it names; a read error leaves both for the next run, and so does a
   missing data file — until `RESULT_FILE_GRACE_SECONDS` (default 10 min) after the manifest was written (its
   mtime): then the manifest is quarantined (`data file … named by the manifest is missing`);
2. verify: schema version, insurer code, SHA-256 of the data bytes, row count, every row's shape, and that the
   rows agree with each other — two rows of one `idempotency_key` that differ in anything (outcome,
   reference, reason, endorsement_id) quarantine the file (`line N: idempotency_key … contradicts line M`);
   an exact repeat of a row is harmless (it means the same answer twice, as a re-sent callback does) — any
   mismatch **quarantines** the file: a `ResultFile(status=quarantined, error=…)` row (operators see it in the
   admin, on /ops/, in `keel_insurer_result_files_quarantined` and in the job-run log) and nothing of it is
   applied;
3. in one transaction: read our submission log for the file's keys; a row whose `endorsement_id` is not the
   endorsement its key was sent for quarantines the file
   (`line N: endorsement_id mismatch: idempotency_key … belongs to endorsement A, the row names B`);
   otherwise claim the file by inserting its `ResultFile` row (unique insurer + name + SHA-256: a file seen
   before, or one a concurrent importer is applying, is skipped) and apply its rows like a callback: update
   our submission log and enqueue `insurer.results_received` in chunks, consumed by the endorsements app (rows
   naming nothing this insurer was sent are counted, not applied; a result equal to the one already recorded
   is not published again);
4. after commit, move the files to `imported/`, `quarantine/` or `duplicates/` (best effort: the claim row,
   not the move, is what makes the import happen once; a move never overwrites an earlier file of the same
   name, see `storage.FileLocation.move`).

`result_files_import` records a job run only when a tick did something new: imported or quarantined a file, or
met a condition (unreachable or misconfigured folder, unreadable manifest, data file still awaited, a file
seen before) that is news by `conditions.condition_is_news`; the matching log warning is rate-limited the same way.
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

from apps.audit.services import insurer_exchange_record, job_run_finish, job_run_start
from apps.common import bulk
from apps.insurers.classification import classify_insurer_error
from apps.insurers.conf import gateway_setting
from apps.insurers.contracts import InsurerConfigurationError, InsurerTopic
from apps.insurers.credentials import decrypt_credentials
from apps.insurers.files.conditions import condition_cleared, condition_is_news
from apps.insurers.files.storage import FileLocation, StorageError, StorageMissingError, check_name, location_for
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
JOB = "insurers.result_files_import"
# Outcomes of `result_file_import` that are news by themselves; the others (duplicate, waiting, unreadable) are
# conditions of one file, news once: a duplicate whose move keeps failing must not write a run every tick.
HANDLED = ("imported", "quarantined")


class QuarantineError(ValueError):
    """The file does not match its manifest or the result schema."""


@dataclass(frozen=True)
class ResultRow:
    idempotency_key: str
    outcome: str
    insurer_reference: str
    reason: str
    endorsement_id: int | None = None  # as the insurer echoed it; checked against the key's endorsement
    line: int = 0  # 1-based line in the data file, for error messages

    def answer(self) -> tuple[str, str, str, int | None]:
        """What the row says (everything but its line): two rows of one key must say the same."""
        return (self.outcome, self.insurer_reference, self.reason, self.endorsement_id)


def parse_rows(content: bytes) -> list[ResultRow]:
    """The rows of a result file; `QuarantineError` naming the first line that is not a valid row.

    Each line is a JSON object: `idempotency_key` (1-255 chars), `outcome` (confirmed|rejected), optional
    `insurer_reference` / `reason` strings (cut to 120 / 500 chars) and optional `endorsement_id` (a positive
    integer)."""
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
        endorsement_id = raw.get("endorsement_id")
        if endorsement_id is not None and (
            not isinstance(endorsement_id, int) or isinstance(endorsement_id, bool) or endorsement_id < 1
        ):
            raise QuarantineError(f"line {number}: endorsement_id must be a positive integer")
        rows.append(ResultRow(key, outcome, reference[:120], reason[:500], endorsement_id, number))
    return rows


def check_consistent(rows: Sequence[ResultRow]) -> None:
    """`QuarantineError` when two rows of one idempotency key say different things (issue 11): the file
    contradicts itself, and applying it in line order would let the last line win silently. An exact repeat is
    allowed — the same answer twice — and applied once."""
    first: dict[str, ResultRow] = {}
    for row in rows:
        earlier = first.setdefault(row.idempotency_key, row)
        if earlier is not row and earlier.answer() != row.answer():
            raise QuarantineError(
                f"line {row.line}: idempotency_key {row.idempotency_key!r} contradicts line {earlier.line} "
                f"({_said(earlier)} vs {_said(row)})"
            )


def _said(row: ResultRow) -> str:
    parts = [row.outcome]
    if row.endorsement_id is not None:
        parts.append(f"endorsement_id {row.endorsement_id}")
    if row.insurer_reference:
        parts.append(f"reference {row.insurer_reference!r}")
    return ", ".join(parts)


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
    check_consistent(rows)
    return rows


Known = dict[str, list[Any]]  # key → [pk, endorsement_id, last_outcome, insurer_reference]


def _lookup(insurer: Insurer, rows: Sequence[ResultRow]) -> Known:
    """Our submission log for the rows' keys: one read per `LOOKUP_CHUNK` keys (tuples, no instances)."""
    keys = list(dict.fromkeys(r.idempotency_key for r in rows))
    is_pg = connection.vendor == "postgresql"
    known: Known = {}
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
    return known


def check_endorsements(rows: Sequence[ResultRow], known: Known) -> None:
    """`QuarantineError` for the first row whose `endorsement_id` is not the endorsement its idempotency key
    was sent for (issue 11): applying it would advance one endorsement with an answer about another. Rows
    without `endorsement_id`, and rows whose key we never sent (counted as unknown), are not checked."""
    for row in rows:
        sub = known.get(row.idempotency_key)
        if sub is not None and row.endorsement_id is not None and row.endorsement_id != sub[1]:
            raise QuarantineError(
                f"line {row.line}: endorsement_id mismatch: idempotency_key {row.idempotency_key!r} belongs to "
                f"endorsement {sub[1]}, the row names {row.endorsement_id}"
            )


# long: one pass of chunked reads, in-place bookkeeping and chunked writes over the same `known` map; split,
# the map and the counters would travel through every piece.
def _apply_rows(insurer: Insurer, rows: Sequence[ResultRow], known: Known, *, source: str) -> tuple[int, int]:
    """Record the rows in our submission log and publish them; (applied, unknown). Caller's transaction.

    Row by row exactly as a callback would (a row naming nothing sent to this insurer is counted, not applied;
    a result equal to the one already recorded — a duplicate line, a re-sent file — is not published again),
    but set-based: `known` is `_lookup`'s read of the log, one UPDATE per `UPDATE_CHUNK` changed rows, one
    `insurer.results_received` event per `EVENT_CHUNK` results. `known` is updated in place, so a later line
    of the same key (an exact repeat: `check_consistent` refused any other) sees what the earlier one recorded."""
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


def _data_file_overdue(inbound: FileLocation, manifest_name: str) -> float | None:
    """Seconds since the manifest was written when that is past `RESULT_FILE_GRACE_SECONDS`, else None (also
    when its time cannot be read now: wait for the next run)."""
    try:
        written = inbound.modified_at(manifest_name)
    except StorageError:
        return None
    age = (timezone.now() - written).total_seconds()
    return age if age >= float(gateway_setting("RESULT_FILE_GRACE_SECONDS")) else None


# long: the import steps of the module docstring in their order, each a short guarded block (read, verify,
# check against our log, claim, apply, move); one function keeps the quarantine paths visible together.
def result_file_import(insurer: Insurer, inbound: FileLocation, manifest_name: str) -> str:
    """Import one result file (steps in the module docstring); returns imported | quarantined | duplicate |
    unreadable (the manifest or data file cannot be read now) | waiting (the data file has not arrived, within
    the grace period)."""
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
        except StorageMissingError:
            overdue = _data_file_overdue(inbound, manifest_name)
            if overdue is None:
                return "waiting"
            # Recorded under the data file's name with the manifest's checksum (there are no data bytes).
            raise QuarantineError(
                f"data file {data_name!r} named by the manifest is missing {int(overdue)} s after the manifest "
                f"was written (grace {int(float(gateway_setting('RESULT_FILE_GRACE_SECONDS')))} s)"
            ) from None
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
        known = _lookup(insurer, rows) if rows else {}
        if not error:
            try:
                check_endorsements(rows, known)
            except QuarantineError as exc:
                rows, error = [], str(exc)[:1000]
        if error:
            claimed = _claim(insurer, status=ResultFileStatus.QUARANTINED, error=error, row_count=0, **common)
            outcome = "quarantined" if claimed else "duplicate"
        else:
            claimed = _claim(insurer, status=ResultFileStatus.IMPORTED, row_count=len(rows), **common)
            outcome = "imported" if claimed else "duplicate"
            if claimed is not None:
                applied, unknown = _apply_rows(insurer, rows, known, source=f"file:{data_name}:{sha[:12]}")
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


def _inbound_listing(insurer: Insurer, counts: Counter[str], news: list[str]) -> tuple[FileLocation, list[str]] | None:
    """The insurer's inbound location and its waiting manifests, or None when it cannot be used (counted as
    `unreachable` / `configuration`; warned about and added to `news` only when that is news)."""
    try:
        credentials = decrypt_credentials(insurer.credentials, insurer_code=insurer.code)
        inbound = location_for(
            insurer.inbound_folder, credentials=credentials, what=f"Insurer {insurer.code!r} inbound folder"
        )
        names = inbound.list_names(MANIFEST_SUFFIX)
    except (StorageError, InsurerConfigurationError) as exc:  # one bad insurer must not stop the others
        condition = "unreachable" if isinstance(exc, StorageError) else "configuration"
        counts[condition] += 1
        if condition_is_news(job=JOB, subject=insurer.code, condition=condition, detail=str(exc)):
            event = "insurers.inbound_unreachable" if condition == "unreachable" else "insurers.inbound_misconfigured"
            log.warning(event, insurer=insurer.code, error=str(exc))
            news.append(condition)
        return None
    condition_cleared(job=JOB, subject=insurer.code, conditions=("unreachable", "configuration"))
    return inbound, names


def result_files_import(*, insurer_code: str | None = None) -> Counter[str]:
    """Import every waiting result file of one file insurer, or of all active ones. Returns counts by outcome
    (`result_file_import`'s, plus `unreachable` / `configuration` per insurer whose inbound folder cannot be
    used now / at all).

    Recorded as a job run only when the tick did something new (issue 11): a file imported or quarantined, or
    a condition (including a duplicate file) that is news (`conditions.condition_is_news`: first seen, changed,
    or not reported for `CONDITION_REPEAT_SECONDS`). An idle tick, or one that only meets conditions already
    reported, writes nothing. An exception is always recorded as a failed run."""
    insurers = Insurer.objects.filter(protocol=InsurerProtocol.FILE, is_active=True)
    if insurer_code is not None:
        insurers = insurers.filter(code=insurer_code)
    counts: Counter[str] = Counter()
    news: list[str] = []
    started_at = timezone.now()
    waiting: list[tuple[Insurer, FileLocation, list[str]]] = []
    for insurer in insurers:
        listing = _inbound_listing(insurer, counts, news)
        if listing is not None and listing[1]:
            waiting.append((insurer, *listing))
    params = {"insurer": insurer_code or "*"}
    try:
        for insurer, inbound, names in waiting:
            for name in names:
                outcome = result_file_import(insurer, inbound, name)
                counts[outcome] += 1
                if outcome in HANDLED or condition_is_news(
                    job=JOB, subject=f"{insurer.code}/{name}", condition=outcome
                ):
                    news.append(outcome)
    except Exception as exc:
        run = job_run_start(job=JOB, params=params, started_at=started_at)
        job_run_finish(run, status="failed", counts=dict(counts), error=f"{type(exc).__name__}: {exc}")
        raise
    if news:
        run = job_run_start(job=JOB, params=params, started_at=started_at)
        job_run_finish(run, status="succeeded", counts=dict(counts))
    return counts
