"""The sandbox file insurer's roster file (reconciliation, issue 12, ADR 0045).

Keel asks for a policy's roster by writing `<request id>.roster-request.json` (`{"policy_number", "request_id"}`)
into the insurer's outbound location; the sandbox answers by writing the roster as JSONL, one member per line
in employee-code order (`employee_code, first_name, last_name, date_of_birth, start_date` ISO, `sum_insured`
paise), and then its manifest (`schema_version` `keel.roster.v1`, `request_id`, `insurer`, `policy_number`,
`file`, `row_count`, `sha256` of the data file's bytes, `created_at`) into the inbound location, atomically and
manifest last, and moves the request to `processed/`. The manifest's suffix is `.roster-manifest.json`, so the
result-file importer (which takes `*.manifest.json`) never picks a roster up. With it, in the same atomic write,
the policy's statement of charges (`statement-<request id>.jsonl` + `.statement-manifest.json`, ADR 0051): one
`{"endorsement_id", "amount"}` per charge in endorsement-id order, as the REST and SOAP faces serve it.

Run by beat with the sandbox's batch files (`insurers.sandbox_files`) and called directly by tests.
"""

from __future__ import annotations

import json
from functools import partial

import structlog

from apps.insurers.conf import sandbox_enabled
from apps.insurers.credentials import decrypt_credentials
from apps.insurers.files.roster import (
    ROSTER_REQUEST_SUFFIX,
    ROSTER_SCHEMA_VERSION,
    STATEMENT_SCHEMA_VERSION,
    roster_file_names,
    statement_file_names,
)
from apps.insurers.files.storage import FileLocation, StorageError, check_name, location_for
from apps.insurers.gateways.file import jsonl, manifest_for
from apps.insurers.models import Insurer, InsurerProtocol
from apps.insurers.sandbox.files import while_folders_usable
from apps.insurers.sandbox.models import SandboxCharge, SandboxRosterMember

log = structlog.get_logger(__name__)


def roster_file_write(inbound: FileLocation, *, code: str, policy_number: str, request_id: str) -> None:
    """Write sandbox `code`'s roster and statement of charges of `policy_number` into `inbound` (data files,
    then manifests, one atomic write)."""
    rows = [
        {
            "employee_code": m.employee_code,
            "first_name": m.first_name,
            "last_name": m.last_name,
            "date_of_birth": m.date_of_birth.isoformat(),
            "sum_insured": m.sum_insured,
            "start_date": m.start_date.isoformat(),
        }
        for m in SandboxRosterMember.objects.filter(code=code, policy_number=policy_number)
        .order_by("employee_code")
        .iterator(chunk_size=2000)
    ]
    charges = [
        {"endorsement_id": endorsement_id, "amount": amount}
        for endorsement_id, amount in SandboxCharge.objects.filter(code=code, policy_number=policy_number)
        .order_by("endorsement_id")
        .values_list("endorsement_id", "amount")
        .iterator(chunk_size=2000)
    ]
    files: list[tuple[str, bytes]] = []
    manifests: list[tuple[str, bytes]] = []
    for schema, names, lines in (
        (ROSTER_SCHEMA_VERSION, roster_file_names(request_id), rows),
        (STATEMENT_SCHEMA_VERSION, statement_file_names(request_id), charges),
    ):
        data_name, manifest_name = names
        content = jsonl(lines)
        described = manifest_for(
            schema_version=schema, batch_id=request_id, insurer=code, file=data_name, content=content
        )
        described["request_id"] = request_id
        described["policy_number"] = policy_number
        files.append((data_name, content))
        manifests.append((manifest_name, json.dumps(described, indent=2).encode()))
    # Data first, manifests last: a reader that sees a manifest finds its data complete.
    inbound.write_files_atomic([*files, *manifests])


def sandbox_roster_requests_answer(*, code: str) -> int:
    """Answer every roster request waiting in sandbox file insurer `code`'s outbound folder; returns how many."""
    if not sandbox_enabled():
        return 0
    insurer = Insurer.objects.get(code=code, protocol=InsurerProtocol.FILE)
    credentials = decrypt_credentials(insurer.credentials, insurer_code=insurer.code)
    outbound = location_for(insurer.outbound_folder, credentials=credentials, what="outbound folder")
    inbound = location_for(insurer.inbound_folder, credentials=credentials, what="inbound folder")
    answered = 0
    for name in outbound.list_names(ROSTER_REQUEST_SUFFIX):
        try:
            request = json.loads(outbound.read(name))
            request_id = check_name(str(request["request_id"]))
            policy_number = str(request["policy_number"])
        except StorageError:
            continue
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("sandbox.roster_request_rejected", file=name, error=str(exc))
            outbound.move(name, "rejected")
            continue
        roster_file_write(inbound, code=code, policy_number=policy_number, request_id=request_id)
        outbound.move(name, "processed")
        answered += 1
    return answered


def sandbox_roster_requests_answer_all() -> int:
    """Every sandbox file insurer (code starting with `sandbox-`), for the beat job."""
    return sum(
        while_folders_usable(code=code, work="roster requests", run=partial(sandbox_roster_requests_answer, code=code))
        for code in Insurer.objects.filter(
            protocol=InsurerProtocol.FILE, is_active=True, code__startswith="sandbox-"
        ).values_list("code", flat=True)
    )
