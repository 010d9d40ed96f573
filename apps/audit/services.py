"""Writers of the four audit streams (SPEC §4).

Writers only INSERT; they never read or lock the hash chain (sealing is asynchronous, apps/audit/sealing.py),
so recording an event costs one indexed insert and never waits behind another writer or the sealer.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from enum import Enum
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.audit.models import (
    AuditEvent,
    ExchangeDirection,
    InsurerExchangeEvent,
    JobPhase,
    JobRunEvent,
    JobStatus,
    PiiAccessEvent,
    PiiAction,
)
from apps.audit.sealing import audit_verify, seal_all
from apps.common import bulk
from apps.common.actors import Actor
from apps.common.bulk import insert_one
from apps.common.logging import current_correlation_id, scrub_text

__all__ = [
    "DEFAULT_SENSITIVE_FIELDS",
    "REDACTED",
    "AuditEntry",
    "AuditError",
    "JobRun",
    "audit_record",
    "audit_record_many",
    "audit_verify",
    "insurer_exchange_record",
    "job_run",
    "job_run_finish",
    "job_run_start",
    "jsonable",
    "pii_access_record",
    "pii_access_record_many",
    "redact",
    "seal_all",
]

logger = logging.getLogger(__name__)

REDACTED = "[redacted]"
DEFAULT_SENSITIVE_FIELDS = frozenset(
    {
        "pan",
        "pan_number",
        "password",
        "secret",
        "api_key",
        "hashed_key",
        "credentials",
        "callback_secret",
        "email",
        "phone_number",
        "date_of_birth",
        # Beyond the contract's minimum: names and contact details of members and partners, auth headers.
        "first_name",
        "last_name",
        "full_name",
        "contact_email",
        "authorization",
        "signing_secret",
        "token",
        "access_token",
        "refresh_token",
    }
)
# Insurer bodies are stored as text; cap what one exchange may add to the table (bytes of UTF-8).
MAX_BODY_BYTES = 16 * 1024
MAX_ERROR_CHARS = 4000
_TRUNCATED = "…[truncated {} bytes]"


class AuditError(RuntimeError):
    pass


def jsonable(value: Any) -> Any:
    """A JSON-safe copy: Decimal and UUID → str, dates and times → ISO 8601, sets → sorted lists."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, Enum):
        return jsonable(value.value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    return str(value)  # Decimal, UUID, model instances (by their __str__), anything else


def redact(value: Any, sensitive: frozenset[str] = DEFAULT_SENSITIVE_FIELDS) -> Any:
    """Replace the values of sensitive keys (case-insensitive, at any depth) with "[redacted]".

    Empty values stay visible ("" / None): that a field was cleared is audit information, not PII."""
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if str(k).lower() in sensitive and v not in (None, "") else redact(v, sensitive))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v, sensitive) for v in value]
    return value


def _changed(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Only the keys whose values differ; a create (no before) or a delete (no after) keeps the whole side."""
    old = jsonable(before) if before is not None else None
    new = jsonable(after) if after is not None else None
    if old is None or new is None:
        return old, new
    keys = [k for k in new if k not in old or old[k] != new[k]] + [k for k in old if k not in new]
    return {k: old[k] for k in keys if k in old}, {k: new[k] for k in keys if k in new}


def _request_id(actor: Actor) -> str:
    return (actor.request_id or current_correlation_id() or "")[:80]


def _ip(actor: Actor) -> str | None:
    """The actor's address if it is one: a malformed value must not fail the change being audited."""
    try:
        return str(ipaddress.ip_address(actor.ip)) if actor.ip else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change for `audit_record_many`: the same fields `audit_record` takes, without the actor."""

    action: str
    object_type: str
    object_id: str | int
    employer_id: int | None = None
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None


def _require_transaction(action: str) -> None:
    if not transaction.get_connection().in_atomic_block:
        raise AuditError(
            f"audit_record({action!r}) must be called inside the transaction of the change it describes "
            "(wrap the service in transaction.atomic)"
        )


def _audit_event(*, actor: Actor, entry: AuditEntry, sensitive: frozenset[str], now: datetime) -> AuditEvent:
    changed_before, changed_after = _changed(entry.before, entry.after)
    return AuditEvent(
        actor=actor.display[:160],
        actor_kind=actor.kind,
        partner_id=actor.partner_id,
        action=entry.action[:80],
        object_type=entry.object_type[:60],
        object_id=str(entry.object_id)[:80],
        employer_id=entry.employer_id,
        before=redact(changed_before, sensitive),
        after=redact(changed_after, sensitive),
        request_id=_request_id(actor),
        ip=_ip(actor),
        created_at=now,
    )


def audit_record(
    *,
    actor: Actor,
    action: str,
    object_type: str,
    object_id: str | int,
    employer_id: int | None = None,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    sensitive_fields: Iterable[str] = (),
) -> AuditEvent:
    """Record a change inside the transaction that makes it: the audit row commits or rolls back with it.

    Stores only the changed fields (JSON-safe), with the default sensitive keys and `sensitive_fields`
    redacted at any depth. Raises `AuditError` outside an atomic block: an audit row written in its own
    transaction could survive a change that rolled back, or be lost while the change commits.
    """
    _require_transaction(action)
    sensitive = DEFAULT_SENSITIVE_FIELDS | {s.lower() for s in sensitive_fields}
    entry = AuditEntry(action, object_type, object_id, employer_id, before, after)
    event = _audit_event(actor=actor, entry=entry, sensitive=sensitive, now=timezone.now())
    insert_one(event)  # `save(force_insert=True)` without the ORM's per-call compilation (issue 15)
    return event


def audit_record_many(
    *, actor: Actor, entries: Sequence[AuditEntry], sensitive_fields: Iterable[str] = ()
) -> list[AuditEvent]:
    """`audit_record` for many changes made by one actor in one transaction (bulk transitions): one INSERT
    per 1,000 rows, the same redaction, the same refusal outside a transaction."""
    if not entries:
        return []
    _require_transaction(entries[0].action)
    sensitive = DEFAULT_SENSITIVE_FIELDS | {s.lower() for s in sensitive_fields}
    now = timezone.now()
    events = [_audit_event(actor=actor, entry=e, sensitive=sensitive, now=now) for e in entries]
    return bulk.copy_create(events)  # type: ignore[return-value]  # COPY when many (bulk transitions)


def _pii_event(
    *, actor: Actor, subject_type: str, subject_id: str | int, field: str, action: str, purpose: str
) -> PiiAccessEvent:
    if action not in PiiAction.values:
        raise AuditError(f"unknown PII access action {action!r}; expected one of {PiiAction.values}")
    if not purpose.strip():
        raise AuditError("a PII access needs a purpose")
    return PiiAccessEvent(
        actor=actor.display[:160],
        actor_kind=actor.kind,
        subject_type=subject_type[:60],
        subject_id=str(subject_id)[:80],
        field=field[:60],
        action=action,
        purpose=purpose[:200],
        request_id=_request_id(actor),
        created_at=timezone.now(),
    )


def pii_access_record(
    *, actor: Actor, subject_type: str, subject_id: str | int, field: str, action: str, purpose: str
) -> PiiAccessEvent:
    """Who touched which protected value, how (decrypt/mask/reveal) and why.

    Reads happen outside transactions too, so this does not require one; inside one it rolls back with it."""
    event = _pii_event(
        actor=actor, subject_type=subject_type, subject_id=subject_id, field=field, action=action, purpose=purpose
    )
    event.save(force_insert=True)
    return event


def pii_access_record_many(
    *, actor: Actor, subject_type: str, subject_ids: Iterable[str | int], field: str, action: str, purpose: str
) -> list[PiiAccessEvent]:
    """`pii_access_record` for a page of subjects (e.g. masking a list response) in one INSERT."""
    events = [
        _pii_event(actor=actor, subject_type=subject_type, subject_id=i, field=field, action=action, purpose=purpose)
        for i in subject_ids
    ]
    return PiiAccessEvent.objects.bulk_create(events) if events else []


def _cap(text: str) -> str:
    # A lone surrogate (a JSON "\\ud800" escape) cannot be stored: it becomes "?" instead of a 500.
    encoded = text.encode("utf-8", errors="replace")
    if len(encoded) <= MAX_BODY_BYTES:
        return encoded.decode("utf-8")
    marker = _TRUNCATED.format(len(encoded))
    keep = MAX_BODY_BYTES - len(marker.encode())
    return encoded[:keep].decode("utf-8", errors="ignore") + marker


def _scrub_body(body: Any) -> str:
    """Redacted, scrubbed, capped text of a request/response body (JSON re-serialised, anything else as text)."""
    if body is None:
        return ""
    if isinstance(body, (bytes, bytearray)):
        body = bytes(body).decode("utf-8", errors="replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return _cap(scrub_text(body))  # XML, CSV, plain text: pattern-scrubbed (PAN, e-mail, keys)
    text = json.dumps(redact(jsonable(body)), sort_keys=True, ensure_ascii=False)
    return _cap(scrub_text(text))


def insurer_exchange_record(
    *,
    insurer_code: str,
    operation: str,
    direction: str = ExchangeDirection.OUTBOUND,
    endpoint: str = "",
    request_body: Any = None,
    response_status: int | None = None,
    response_body: Any = None,
    duration_ms: int | None = None,
    error: str = "",
    endorsement_id: int | None = None,
    correlation_id: str | None = None,
) -> InsurerExchangeEvent:
    """Record one request/response with an insurer, bodies redacted and capped at 16 KiB each.

    May be called outside a transaction: it describes an external call that already happened, and should
    be written even when the caller's own transaction later fails (so call it outside that transaction)."""
    if direction not in ExchangeDirection.values:
        raise AuditError(f"unknown exchange direction {direction!r}")
    return InsurerExchangeEvent.objects.create(
        insurer_code=insurer_code[:40],
        operation=operation[:60],
        direction=direction,
        endpoint=scrub_text(endpoint)[:500],
        request_body=_scrub_body(request_body),
        response_status=response_status,
        response_body=_scrub_body(response_body),
        duration_ms=max(0, duration_ms) if duration_ms is not None else None,
        error=scrub_text(error)[:MAX_ERROR_CHARS],
        endorsement_id=endorsement_id,
        correlation_id=(correlation_id or current_correlation_id() or "")[:80],
        created_at=timezone.now(),
    )


@dataclass
class JobRun:
    """Handle of a running job: fill `counts`; `job_run_finish` (or the `job_run` block) writes the end."""

    run_id: uuid.UUID
    job: str
    counts: dict[str, Any] = field(default_factory=dict)
    status: str = JobStatus.RUNNING
    finished: bool = False


def job_run_start(*, job: str, params: Mapping[str, Any] | None = None, started_at: datetime | None = None) -> JobRun:
    """Write the start event of a run. Call it outside the job's own transaction, or a rollback erases it.

    `started_at` (default now) lets a job that decides afterwards whether its run is worth recording (a beat
    job's tick that met nothing new writes no run at all) record when the run really began."""
    run = JobRun(run_id=uuid.uuid4(), job=job[:80])
    JobRunEvent.objects.create(
        run_id=run.run_id,
        job=run.job,
        phase=JobPhase.START,
        status=JobStatus.RUNNING,
        params=redact(jsonable(params)) if params else None,
        created_at=started_at or timezone.now(),
    )
    return run


def job_run_finish(
    run: JobRun, *, status: str, counts: Mapping[str, Any] | None = None, error: str = ""
) -> JobRunEvent | None:
    """Write the end event of a run (once: a second call is ignored and returns None)."""
    if status not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED):
        raise AuditError(f"unknown job status {status!r}")
    if run.finished:
        return None
    if counts is not None:
        run.counts = dict(counts)
    event = JobRunEvent.objects.create(
        run_id=run.run_id,
        job=run.job,
        phase=JobPhase.END,
        status=status,
        counts=jsonable(run.counts),
        error=scrub_text(error)[:MAX_ERROR_CHARS],
        created_at=timezone.now(),
    )
    run.finished, run.status = True, status
    return event


@contextmanager
def job_run(job: str, params: Mapping[str, Any] | None = None) -> Iterator[JobRun]:
    """Start and end events around a job. The body fills `run.counts`; it ends `succeeded`, or `failed` with
    the error text when an exception escapes (`cancelled` for KeyboardInterrupt/SystemExit), then re-raises.

    Use it outside the job's transactions: an end event written inside a transaction that rolls back is lost.
    """
    run = job_run_start(job=job, params=params)
    try:
        yield run
    except BaseException as exc:
        status = JobStatus.CANCELLED if isinstance(exc, (KeyboardInterrupt, SystemExit)) else JobStatus.FAILED
        try:
            job_run_finish(run, status=status, error=f"{type(exc).__name__}: {exc}")
        except Exception:
            # The job's own error matters more than its end event (e.g. the connection is in a failed
            # transaction); log and let the original exception propagate.
            logger.exception("could not record the end of job run %s (%s)", run.run_id, job)
        raise
    job_run_finish(run, status=JobStatus.SUCCEEDED)
