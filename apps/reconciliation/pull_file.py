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

The statement of charges (ADR 0051) comes with the roster (`statement-<request_id>.jsonl` + its manifest,
`keel.statement.v1`): `file_statement_charges` waits for it the same way (the request was written for the
roster), verifies it the same way (a mismatch quarantines both files and fails the run), yields
`(endorsement_id, amount)` in id order and moves the files to `imported/`.
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
    STATEMENT_SCHEMA_VERSION,
    roster_file_names,
    statement_file_names,
)
from apps.insurers.files.storage import FileLocation, StorageError
from apps.reconciliation.pull import RosterPage, RosterPullError, member_from_insurer

DEFAULT_POLL_SECONDS = 5.0
DEFAULT_MAX_WAIT_SECONDS = 600.0


def _verified_rows(
    inbound: FileLocation, *, names: tuple[str, str], schema_version: str, policy_number: str, what: str
) -> list[bytes]:
    """The lines of data file `names[0]` after checking it against its manifest `names[1]`; quarantines both
    and raises `RosterPullError` on a mismatch (`what`: "roster" or "statement", for the message)."""
    data_name, manifest_name = names
    try:
        manifest = json.loads(inbound.read(manifest_name))
        content = inbound.read(data_name)
    except StorageError as exc:
        raise RosterPullError(f"{what} file {data_name} unreadable: {exc}") from exc
    except ValueError as exc:
        manifest, content = None, b""
        problem = f"manifest is not JSON ({exc})"
    if manifest is not None:
        digest = hashlib.sha256(content).hexdigest()
        rows = content.count(b"\n")
        if not isinstance(manifest, dict):
            problem = "manifest is not a JSON object"
        elif manifest.get("schema_version") != schema_version:
            problem = f"schema_version {manifest.get('schema_version')!r} is not {schema_version!r}"
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
    raise RosterPullError(f"{what} file {data_name} quarantined: {problem}")


def _verified_answer(
    *,
    outbound: FileLocation,
    inbound: FileLocation,
    names: tuple[str, str],
    schema_version: str,
    what: str,
    policy_number: str,
    request_id: str,
    sleep: Callable[[float], None],
    poll_seconds: float,
    max_wait_seconds: float,
) -> list[bytes]:
    """Steps 1 and 2 for either answer to a roster request — the roster or the statement (`what`, for the
    messages), data file and manifest `names`: write the request if the manifest is not in the inbound location
    yet, poll for it, and return the data's lines once verified against it. Raises `RosterPullError` (the
    request could not be written, no answer within `max_wait_seconds`, a quarantined file)."""
    manifest_name = names[1]
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
            raise RosterPullError(f"no file {manifest_name} after {max_wait_seconds:.0f} s")
        sleep(poll_seconds)
        waited += poll_seconds
    return _verified_rows(inbound, names=names, schema_version=schema_version, policy_number=policy_number, what=what)


def _imported(inbound: FileLocation, names: tuple[str, str]) -> None:
    """Step 4: move a read answer (data file and manifest) to `imported/`."""
    for name in names:
        with contextlib.suppress(StorageError):  # read and recorded; a file left behind is only clutter
            inbound.move(name, "imported")


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
    lines = _verified_answer(
        outbound=outbound,
        inbound=inbound,
        names=(data_name, manifest_name),
        schema_version=ROSTER_SCHEMA_VERSION,
        what="roster",
        policy_number=policy_number,
        request_id=request_id,
        sleep=sleep,
        poll_seconds=poll_seconds,
        max_wait_seconds=max_wait_seconds,
    )
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
    _imported(inbound, (data_name, manifest_name))
    if total == 0:
        yield RosterPage(members=[], next_cursor=None, page=1, total=0)


def file_statement_charges(
    *,
    outbound: FileLocation,
    inbound: FileLocation,
    policy_number: str,
    request_id: str,
    sleep: Callable[[float], None] = time.sleep,
    poll_seconds: float = DEFAULT_POLL_SECONDS,
    max_wait_seconds: float = DEFAULT_MAX_WAIT_SECONDS,
) -> Iterator[tuple[int, int]]:
    """The insurer's statement of charges of `policy_number` answering `request_id`, as `(endorsement_id,
    amount)` (paise, debit > 0, credit < 0) in endorsement-id order, from the verified statement file. Raises
    `RosterPullError` (no answer in time, a quarantined file, a bad row, rows out of id order)."""
    data_name, manifest_name = statement_file_names(request_id)
    lines = _verified_answer(
        outbound=outbound,
        inbound=inbound,
        names=(data_name, manifest_name),
        schema_version=STATEMENT_SCHEMA_VERSION,
        what="statement",
        policy_number=policy_number,
        request_id=request_id,
        sleep=sleep,
        poll_seconds=poll_seconds,
        max_wait_seconds=max_wait_seconds,
    )
    previous = 0
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
            endorsement_id, amount = row["endorsement_id"], row["amount"]
            if type(endorsement_id) is not int or type(amount) is not int:  # a JSON true is no id 1
                raise TypeError("endorsement_id and amount are integers (paise)")
        except (ValueError, KeyError, TypeError) as exc:
            raise RosterPullError(f"unreadable row in {data_name} at row {number}: {exc}") from exc
        if endorsement_id <= previous:
            # The match is a merge-join on endorsement id: an out-of-order row would be misread as missing.
            raise RosterPullError(f"{data_name} row {number}: endorsement ids are not in ascending order")
        previous = endorsement_id
        yield endorsement_id, amount
    _imported(inbound, (data_name, manifest_name))
