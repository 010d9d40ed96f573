"""Writers of the four audit streams. Writers only INSERT: they never wait on a chain lock (sealing is async)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.audit.models import AuditEvent, InsurerExchangeEvent, JobRunEvent, PiiAccessEvent
from apps.common.actors import Actor
from apps.common.logging import current_correlation_id, scrub_text

REDACTED = "[redacted]"
DEFAULT_SENSITIVE = frozenset(
    {"pan", "pan_number", "password", "secret", "api_key", "hashed_key", "credentials", "callback_secret",
     "email", "phone_number", "date_of_birth", "first_name", "last_name", "contact_email", "authorization"}
)
MAX_BODY_CHARS = 16_000


class AuditError(RuntimeError):
    pass


def jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (Decimal, uuid.UUID)):
        return str(value)
    return value


def _redact(data: Mapping[str, Any] | None, sensitive: frozenset[str]) -> dict[str, Any] | None:
    if data is None:
        return None
    return {k: (REDACTED if k.lower() in sensitive and v not in (None, "") else jsonable(v)) for k, v in data.items()}


def _changed(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    if before is None or after is None:
        return (dict(before) if before is not None else None), (dict(after) if after is not None else None)
    keys = [k for k in after if k not in before or jsonable(before[k]) != jsonable(after[k])]
    keys += [k for k in before if k not in after]
    return {k: before.get(k) for k in keys if k in before}, {k: after.get(k) for k in keys if k in after}


def _require_transaction() -> None:
    if not transaction.get_connection().in_atomic_block:
        raise AuditError("audit records must be written inside the transaction of the change they describe")


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
    """Record a change in the caller's transaction: only changed fields, sensitive values redacted."""
    _require_transaction()
    sensitive = DEFAULT_SENSITIVE | {s.lower() for s in sensitive_fields}
    changed_before, changed_after = _changed(before, after)
    return AuditEvent.objects.create(
        actor=actor.display[:160],
        actor_kind=actor.kind,
        partner_id=actor.partner_id,
        action=action[:80],
        object_type=object_type[:60],
        object_id=str(object_id)[:80],
        employer_id=employer_id,
        before=_redact(changed_before, sensitive),
        after=_redact(changed_after, sensitive),
        request_id=(actor.request_id or current_correlation_id() or "")[:80],
        ip=actor.ip,
        created_at=timezone.now(),
    )


def pii_access_record(
    *, actor: Actor, subject_type: str, subject_id: str | int, field: str, action: str, purpose: str
) -> PiiAccessEvent:
    """Who touched which protected value, how (decrypt/mask/reveal) and why."""
    if action not in ("decrypt", "mask", "reveal"):
        raise AuditError(f"unknown PII access action {action!r}")
    return PiiAccessEvent.objects.create(
        actor=actor.display[:160],
        actor_kind=actor.kind,
        subject_type=subject_type[:60],
        subject_id=str(subject_id)[:80],
        field=field[:60],
        action=action,
        purpose=purpose[:200],
        request_id=(actor.request_id or current_correlation_id() or "")[:80],
        created_at=timezone.now(),
    )


def _scrub_body(body: Any) -> str:
    if body is None:
        return ""
    if isinstance(body, (bytes, bytearray)):
        body = body.decode("utf-8", errors="replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return scrub_text(body)[:MAX_BODY_CHARS]
    text = json.dumps(_deep_redact(jsonable(body)), sort_keys=True)
    return scrub_text(text)[:MAX_BODY_CHARS]


def _deep_redact(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: (REDACTED if k.lower() in DEFAULT_SENSITIVE else _deep_redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_redact(v) for v in value]
    return value


def insurer_exchange_record(
    *,
    insurer_code: str,
    operation: str,
    direction: str = "outbound",
    endpoint: str = "",
    request_body: Any = None,
    response_status: int | None = None,
    response_body: Any = None,
    duration_ms: int | None = None,
    error: str = "",
    endorsement_id: int | None = None,
    correlation_id: str | None = None,
) -> InsurerExchangeEvent:
    """Record one request/response with an insurer (bodies redacted and capped). May run outside a transaction:
    it describes an external call that already happened."""
    return InsurerExchangeEvent.objects.create(
        insurer_code=insurer_code[:40],
        operation=operation[:60],
        direction=direction[:8],
        endpoint=endpoint[:500],
        request_body=_scrub_body(request_body),
        response_status=response_status,
        response_body=_scrub_body(response_body),
        duration_ms=duration_ms,
        error=scrub_text(error)[:4000],
        endorsement_id=endorsement_id,
        correlation_id=(correlation_id or current_correlation_id() or "")[:80],
        created_at=timezone.now(),
    )


@dataclass
class JobRun:
    run_id: uuid.UUID
    job: str
    counts: dict[str, Any] = field(default_factory=dict)
    finished: bool = False


def job_run_start(*, job: str, params: Mapping[str, Any] | None = None) -> JobRun:
    run = JobRun(run_id=uuid.uuid4(), job=job)
    JobRunEvent.objects.create(run_id=run.run_id, job=job[:80], phase="start", status="running",
                               params=jsonable(params) if params else None, created_at=timezone.now())
    return run


def job_run_finish(run: JobRun, *, status: str, counts: Mapping[str, Any] | None = None, error: str = "") -> None:
    if status not in ("succeeded", "failed", "cancelled"):
        raise AuditError(f"unknown job status {status!r}")
    if run.finished:
        return
    run.finished = True
    JobRunEvent.objects.create(run_id=run.run_id, job=run.job, phase="end", status=status,
                               counts=jsonable(dict(counts if counts is not None else run.counts)),
                               error=scrub_text(error)[:4000], created_at=timezone.now())


@contextmanager
def job_run(job: str, params: Mapping[str, Any] | None = None) -> Iterator[JobRun]:
    """Start and end events around a job; an escaping exception ends it `failed` with its message."""
    run = job_run_start(job=job, params=params)
    try:
        yield run
    except BaseException as exc:
        job_run_finish(run, status="failed", error=f"{type(exc).__name__}: {exc}")
        raise
    job_run_finish(run, status="succeeded")
