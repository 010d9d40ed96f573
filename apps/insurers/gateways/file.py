"""File adapter: each window's endorsements become one JSONL batch file plus a manifest in the insurer's
outbound location (SPEC §8, ADR 0028). The results come back later as result files in the inbound location,
imported by `apps.insurers.files.importer` on a beat schedule; so every submission here is `pending`.

Batch file `<batch_id>.jsonl`: one JSON object per line, exactly the REST item shape (`submission_to_json`),
UTF-8, `\\n`-terminated. Manifest `<batch_id>.manifest.json`: `{schema_version, batch_id, insurer, file,
row_count, sha256 (hex of the batch file's bytes), created_at (ISO 8601 UTC)}`. The batch id is a digest of the
batch's idempotency keys, so a retried batch rewrites the same names (the insurer dedups per key anyway).
Both are written atomically, data first and manifest last: an insurer that waits for the manifest never
reads a partial batch.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from apps.audit.services import insurer_exchange_record
from apps.common.logging import current_correlation_id
from apps.insurers.contracts import EndorsementSubmission, SubmissionResult, TransientInsurerError
from apps.insurers.credentials import decrypt_credentials
from apps.insurers.files.storage import FileLocation, StorageError, location_for
from apps.insurers.gateways.rest import submission_to_json

if TYPE_CHECKING:
    from apps.insurers.models import Insurer

BATCH_SCHEMA_VERSION = "keel.endorsements.batch.v1"
RESULT_SCHEMA_VERSION = "keel.endorsements.results.v1"
MANIFEST_SUFFIX = ".manifest.json"
OPERATION = "endorsements.file_write"
EXCHANGE_LOG_ROWS = 20


def batch_id_for(submissions: Sequence[EndorsementSubmission]) -> str:
    digest = hashlib.sha256("\n".join(sorted(s.idempotency_key for s in submissions)).encode()).hexdigest()
    return f"batch-{digest[:32]}"


def jsonl(rows: Sequence[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(row, separators=(",", ":"), ensure_ascii=False).encode() + b"\n" for row in rows)


def manifest_for(*, schema_version: str, batch_id: str, insurer: str, file: str, content: bytes) -> dict[str, Any]:
    return {
        "schema_version": schema_version,
        "batch_id": batch_id,
        "insurer": insurer,
        "file": file,
        "row_count": content.count(b"\n"),
        "sha256": hashlib.sha256(content).hexdigest(),
        "created_at": datetime.now(UTC).isoformat(),
    }


def write_batch(
    location: FileLocation, *, schema_version: str, batch_id: str, insurer: str, rows: Sequence[dict[str, Any]]
) -> dict[str, Any]:
    """Write `<batch_id>.jsonl` and then its manifest, atomically; returns the manifest."""
    content = jsonl(rows)
    name = f"{batch_id}.jsonl"
    manifest = manifest_for(
        schema_version=schema_version, batch_id=batch_id, insurer=insurer, file=name, content=content
    )
    location.write_files_atomic(
        [(name, content), (f"{batch_id}{MANIFEST_SUFFIX}", json.dumps(manifest, indent=2).encode())]
    )
    return manifest


class FileGateway:
    def __init__(self, *, insurer_code: str, outbound: FileLocation) -> None:
        self.insurer_code = insurer_code
        self.outbound = outbound

    @classmethod
    def for_insurer(cls, insurer: Insurer) -> FileGateway:
        """Raises `InsurerConfigurationError` when a folder is missing or unusable (checked before sending)."""
        credentials = decrypt_credentials(insurer.credentials, insurer_code=insurer.code)
        outbound = location_for(
            insurer.outbound_folder, credentials=credentials, what=f"Insurer {insurer.code!r} outbound folder"
        )
        # The inbound folder is not written here, but a file insurer without one could never answer.
        location_for(insurer.inbound_folder, credentials=credentials, what=f"Insurer {insurer.code!r} inbound folder")
        return cls(insurer_code=insurer.code, outbound=outbound)

    def submit(self, submissions: Sequence[EndorsementSubmission]) -> list[SubmissionResult]:
        if not submissions:
            return []
        rows = [submission_to_json(s) for s in submissions]
        batch_id = batch_id_for(submissions)
        started = time.monotonic()
        error = ""
        manifest: dict[str, Any] | None = None
        try:
            manifest = write_batch(
                self.outbound,
                schema_version=BATCH_SCHEMA_VERSION,
                batch_id=batch_id,
                insurer=self.insurer_code,
                rows=rows,
            )
        except StorageError as exc:
            error = str(exc)
        insurer_exchange_record(
            insurer_code=self.insurer_code,
            operation=OPERATION,
            direction="outbound",
            endpoint=f"{self.outbound.describe()}/{batch_id}.jsonl",
            # The stored body is capped at 16 KiB anyway: log the batch's identity and its first rows (redacted)
            # instead of redacting all of a 10,000-row batch only to cut it.
            request_body={"batch_id": batch_id, "row_count": len(rows), "endorsements": rows[:EXCHANGE_LOG_ROWS]},
            response_body=manifest,
            duration_ms=int((time.monotonic() - started) * 1000),
            error=error,
            endorsement_id=submissions[0].endorsement_id if len(submissions) == 1 else None,
            correlation_id=current_correlation_id(),
        )
        if manifest is None:
            raise TransientInsurerError(f"insurer {self.insurer_code}: could not write the batch file: {error}")
        return [
            SubmissionResult(endorsement_id=s.endorsement_id, outcome="pending", insurer_reference=None)
            for s in submissions
        ]
