"""The roster file contract of file insurers (reconciliation, issue 12, ADR 0045): names and schema version
shared by Keel's puller (`apps.reconciliation.pull_file`) and the sandbox file insurer
(`apps.insurers.sandbox.roster_files`).

Keel asks with `<request id>.roster-request.json` (`{"policy_number", "request_id"}`) in the outbound location;
the insurer answers with `roster-<request id>.jsonl` and then `roster-<request id>.roster-manifest.json` in the
inbound location. The manifest suffix is not `.manifest.json`, so the result-file importer never takes a roster.

With the roster the insurer answers its statement of charges for the policy (ADR 0051): `statement-<request id>.jsonl`
(one `{"endorsement_id", "amount"}` per line, paise, debit > 0, credit < 0, in endorsement-id order) and then
`statement-<request id>.statement-manifest.json` (`schema_version` `keel.statement.v1`, the same fields and
SHA-256 check as the roster's).
"""

from __future__ import annotations

ROSTER_SCHEMA_VERSION = "keel.roster.v1"
ROSTER_REQUEST_SUFFIX = ".roster-request.json"
ROSTER_MANIFEST_SUFFIX = ".roster-manifest.json"
STATEMENT_SCHEMA_VERSION = "keel.statement.v1"
STATEMENT_MANIFEST_SUFFIX = ".statement-manifest.json"


def roster_file_names(request_id: str) -> tuple[str, str]:
    """`(data file, manifest)` names of the roster file answering `request_id`."""
    return f"roster-{request_id}.jsonl", f"roster-{request_id}{ROSTER_MANIFEST_SUFFIX}"


def statement_file_names(request_id: str) -> tuple[str, str]:
    """`(data file, manifest)` names of the statement of charges answering `request_id`."""
    return f"statement-{request_id}.jsonl", f"statement-{request_id}{STATEMENT_MANIFEST_SUFFIX}"
