"""Pulling a file insurer's roster (issue 12, ADR 0045): ask for it with a request file in the insurer's
outbound location, wait for the roster file (JSONL + manifest) in its inbound location, verify it, then hand
it to the runner in pages like the REST and SOAP pullers.

File names and shapes: `apps.insurers.files.roster`. I/O only, no database.

1. If the roster file answering `request_id` is not in the inbound location yet, write the request
   `<request_id>.roster-request.json` (same name on a retry: asking twice is harmless) and poll every
   `poll_seconds` through `sleep` (the runner's refreshes the run's lock) for at most `max_wait_seconds`.
2. Read the manifest and the data; the schema version, the policy, the SHA-256 of the data's bytes and its
   row count must all match, else both files move to the inbound `quarantine/` and the pull fails naming the
   mismatch.
3. Yield pages of `page_size` rows; a page's cursor is the row offset after it, so a resumed run starts at
   the next unrecorded row of the same file.
4. When the last page has been yielded the files move to `imported/`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from apps.insurers.files.roster import (
    ROSTER_REQUEST_SUFFIX,
    ROSTER_SCHEMA_VERSION,
    roster_file_names,
)
from apps.insurers.files.storage import FileLocation, StorageError
from apps.reconciliation.pull import RosterPage, RosterPullError, member_from_insurer

DEFAULT_POLL_SECONDS = 5.0
DEFAULT_MAX_WAIT_SECONDS = 600.0


def _verified_rows(inbound: FileLocation, *, request_id: str, policy_number: str) -> list[bytes]:
    """The roster file's lines after checking it against its manifest; quarantines and raises on a mismatch."""
    data_name, manifest_name = roster_file_names(request_id)
    try:
        manifest = json.loads(inbound.read(manifest_name))
        content = inbound.read(data_name)
    except StorageError as exc:
        raise RosterPullError(f"roster file {data_name} unreadable: {exc}") from exc
    except ValueError as exc:
        manifest, content = None, b""
        problem = f"manifest is not JSON ({exc})"
    if manifest is not None:
        digest = hashlib.sha256(content).hexdigest()
        rows = content.count(b"\n")
        if not isinstance(manifest, dict):
            problem = "manifest is not a JSON object"
        elif manifest.get("schema_version") != ROSTER_SCHEMA_VERSION:
            problem = f"schema_version {manifest.get('schema_version')!r} is not {ROSTER_SCHEMA_VERSION!r}"
        elif manifest.get("policy_number") != policy_number:
            problem = f"policy_number {manifest.get('policy_number')!r} is not {policy_number!r}"
        elif manifest.get("sha256") != digest:
            problem = f"sha256 {digest} does not match the manifest's {manifest.get('sha256')!r}"
        elif manifest.get("row_count") != rows:
            problem = f"{rows} rows, the manifest says {manifest.get('row_count')!r}"
        else:
            return content.splitlines()
    for name in (data_name, manifest_name):
        with contextlib.suppress(StorageError):  # the error below says what is wrong; the file stays
            inbound.move(name, "quarantine")
    raise RosterPullError(f"roster file {data_name} quarantined: {problem}")


def file_roster_pages(
    *,
    outbound: FileLocation,
    inbound: FileLocation,
    policy_number: str,
    request_id: str,
    cursor: str = "",
    page_size: int = 1000,
    sleep: Callable[[float], None] = time.sleep,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
) -> Iterator[RosterPage]:
    """Yield the roster of `policy_number` from the file answering `request_id`, from row `cursor` (a row
    offset; empty: the start). Raises `RosterPullError` (no answer in time, a quarantined file, a bad row)."""
    data_name, manifest_name = roster_file_names(request_id)
    waited = 0.0
    requested = False
    while manifest_name not in inbound.list_names(manifest_name):
        if not requested:
            request = json.dumps({"policy_number": policy_number, "request_id": request_id}).encode()
            try:
                outbound.write_files_atomic([(f"{request_id}{ROSTER_REQUEST_SUFFIX}", request)])
            except StorageError as exc:
                raise RosterPullError(f"could not write the roster request: {exc}") from exc
            requested = True
        if waited >= max_wait_seconds:
            raise RosterPullError(f"no roster file {manifest_name} after {max_wait_seconds:.0f} s")
        sleep(poll_seconds)
        waited += poll_seconds
    lines = _verified_rows(inbound, request_id=request_id, policy_number=policy_number)
    start = int(cursor or 0)
    total = len(lines)
    page_number = start // page_size + 1
    for offset in range(start, total, page_size):
        chunk = lines[offset : offset + page_size]
        try:
            members: list[dict[str, Any]] = [member_from_insurer(json.loads(line)) for line in chunk]
        except (ValueError, KeyError, TypeError) as exc:
            raise RosterPullError(f"unreadable row in {data_name} near row {offset + 1}: {exc}") from exc
        end = offset + len(chunk)
        yield RosterPage(members=members, next_cursor=str(end) if end < total else None, page=page_number, total=total)
        page_number += 1
    for name in (data_name, manifest_name):
        with contextlib.suppress(StorageError):  # read and recorded; a file left behind is only clutter
            inbound.move(name, "imported")
    if total == 0:
        yield RosterPage(members=[], next_cursor=None, page=1, total=0)
