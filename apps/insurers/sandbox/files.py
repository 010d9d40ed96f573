"""The sandbox insurer's file face (SPEC §8): it picks up Keel's batch files from the insurer's outbound
location, applies them with the same engine, rules and idempotency ledger as the REST and SOAP faces, and
writes a result file (JSONL + manifest, atomically, manifest last) into the insurer's inbound location.

Run by beat under `make run` (`insurers.sandbox_files`) and called directly by tests and the benchmark.
Latency is simulated per file; the failure rate leaves a file for a later run (an insurer that is slow to
answer). A batch whose manifest does not match its data is moved to `rejected/` and answered with nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from functools import partial

import structlog

from apps.insurers.conf import sandbox_enabled
from apps.insurers.contracts import InsurerConfigurationError
from apps.insurers.credentials import decrypt_credentials
from apps.insurers.files.conditions import condition_cleared, condition_report
from apps.insurers.files.storage import StorageError, check_name, location_for
from apps.insurers.gateways.file import BATCH_SCHEMA_VERSION, MANIFEST_SUFFIX, RESULT_SCHEMA_VERSION, write_batch
from apps.insurers.models import Insurer, InsurerProtocol
from apps.insurers.sandbox.engine import SandboxInputError, parse_items, sandbox_apply, sandbox_config_for
from apps.insurers.sandbox.models import SandboxMode

log = structlog.get_logger(__name__)
folder_log = logging.getLogger(__name__)


def sandbox_file_process(*, code: str) -> int:
    """Answer every complete batch waiting in sandbox insurer `code`'s outbound folder; returns how many."""
    if not sandbox_enabled():
        return 0
    insurer = Insurer.objects.get(code=code, protocol=InsurerProtocol.FILE)
    credentials = decrypt_credentials(insurer.credentials, insurer_code=insurer.code)
    outbound = location_for(insurer.outbound_folder, credentials=credentials, what="outbound folder")
    inbound = location_for(insurer.inbound_folder, credentials=credentials, what="inbound folder")
    config = sandbox_config_for(code)
    answered = 0
    for manifest_name in outbound.list_names(MANIFEST_SUFFIX):
        if config.latency_ms:
            time.sleep(config.latency_ms / 1000)
        if config.failure_rate and random.random() < config.failure_rate:  # noqa: S311 (a simulation)
            continue
        try:
            manifest = json.loads(outbound.read(manifest_name))
            data_name = check_name(str(manifest["file"]))
            content = outbound.read(data_name)
            if (
                manifest.get("schema_version") != BATCH_SCHEMA_VERSION
                or hashlib.sha256(content).hexdigest() != manifest.get("sha256")
                or content.count(b"\n") != manifest.get("row_count")
            ):
                raise SandboxInputError("batch file does not match its manifest")
            items = parse_items([json.loads(line) for line in content.splitlines()])
        except StorageError:
            continue  # not readable now: next run
        except (KeyError, TypeError, ValueError, SandboxInputError) as exc:
            log.warning("sandbox.file_rejected", file=manifest_name, error=str(exc))
            outbound.move(manifest_name, "rejected")
            continue
        if config.mode != SandboxMode.SYNC:
            config.mode = SandboxMode.SYNC  # a file insurer answers by file, never by callback
        results, _ = sandbox_apply(config=config, items=items)
        rows = []
        for item, result in zip(items, results, strict=True):
            row = {"idempotency_key": item.idempotency_key, "outcome": result["outcome"]}
            if item.endorsement_id:  # 0: no Keel endorsement (a reconciliation resend) — nothing to echo
                row["endorsement_id"] = item.endorsement_id
            if result.get("insurer_reference"):
                row["insurer_reference"] = result["insurer_reference"]
            if result.get("reason"):
                row["reason"] = result["reason"]
            rows.append(row)
        batch_id = str(manifest.get("batch_id") or data_name.removesuffix(".jsonl"))
        write_batch(
            inbound, schema_version=RESULT_SCHEMA_VERSION, batch_id=f"{batch_id}.results", insurer=code, rows=rows
        )
        outbound.move(data_name, "processed")
        outbound.move(manifest_name, "processed")
        answered += 1
    return answered


def sandbox_files_process_all() -> int:
    """Every sandbox file insurer (code starting with `sandbox-`), for the beat job; an insurer whose folders
    cannot be used now is skipped and reported by `while_folders_usable`."""
    total = 0
    for code in Insurer.objects.filter(
        protocol=InsurerProtocol.FILE, is_active=True, code__startswith="sandbox-"
    ).values_list("code", flat=True):
        total += while_folders_usable(code=code, work="batches", run=partial(sandbox_file_process, code=code))
    return total


JOB = "insurers.sandbox_files"
UNUSABLE_REPEAT_SECONDS = 600.0


def while_folders_usable(*, code: str, work: str, run: Callable[[], int]) -> int:
    """`run()` (a beat job's work for sandbox file insurer `code`), or 0 when its folders cannot be used now
    (missing, not a folder, not writable, SFTP down, misconfigured), logged once per condition (issue 11): the
    beat job runs every 2 s, and a traceback each time buried everything else. Which report is due comes from
    the file jobs' one condition memory (`files.conditions`, shared by every worker):

    1. A new condition (first failure, or a different error): one warning with the traceback.
    2. The same condition again: nothing, except a one-line reminder every `UNUSABLE_REPEAT_SECONDS`.
    3. Usable again after a reported failure: one info line."""
    subject = f"{code}/{work}"
    try:
        done = run()
    except (OSError, InsurerConfigurationError) as exc:
        condition = f"{type(exc).__name__}: {exc}"
        fields = {"insurer": code, "work": work, "condition": condition[:500]}
        report = condition_report(
            job=JOB, subject=subject, condition="unusable", detail=condition, repeat_seconds=UNUSABLE_REPEAT_SECONDS
        )
        if report == "new":
            folder_log.warning("sandbox.file_folder_unusable", exc_info=True, extra=fields)
        elif report == "repeat":
            folder_log.warning("sandbox.file_folder_still_unusable", extra=fields)
        return 0
    if condition_cleared(job=JOB, subject=subject, conditions=("unusable",)):
        folder_log.info("sandbox.file_folder_usable_again", extra={"insurer": code, "work": work})
    return done
