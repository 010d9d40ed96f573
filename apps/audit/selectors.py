"""Reads of the audit streams for the admin and the operations dashboard."""

from __future__ import annotations

from datetime import datetime

from django.db.models import Max, QuerySet

from apps.audit.models import (
    AuditChainHead,
    AuditEvent,
    InsurerExchangeEvent,
    JobPhase,
    JobRunEvent,
    PiiAccessEvent,
)


def audit_events(
    *,
    employer_id: int | None = None,
    object_type: str | None = None,
    object_id: str | int | None = None,
    action: str | None = None,
    actor_kind: str | None = None,
    request_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> QuerySet[AuditEvent]:
    """Audit events, newest first, narrowed by any of the given filters (each has an index behind it)."""
    qs = AuditEvent.objects.all()
    if employer_id is not None:
        qs = qs.filter(employer_id=employer_id)
    if object_type is not None:
        qs = qs.filter(object_type=object_type)
    if object_id is not None:
        qs = qs.filter(object_id=str(object_id))
    if action is not None:
        qs = qs.filter(action=action)
    if actor_kind is not None:
        qs = qs.filter(actor_kind=actor_kind)
    if request_id is not None:
        qs = qs.filter(request_id=request_id)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    if until is not None:
        qs = qs.filter(created_at__lt=until)
    return qs.order_by("-created_at", "-id")


def object_history(*, object_type: str, object_id: str | int) -> QuerySet[AuditEvent]:
    """Everything that happened to one object, oldest first."""
    return AuditEvent.objects.filter(object_type=object_type, object_id=str(object_id)).order_by("id")


def pii_access_events(
    *, subject_type: str | None = None, subject_id: str | int | None = None, actor: str | None = None
) -> QuerySet[PiiAccessEvent]:
    qs = PiiAccessEvent.objects.all()
    if subject_type is not None:
        qs = qs.filter(subject_type=subject_type)
    if subject_id is not None:
        qs = qs.filter(subject_id=str(subject_id))
    if actor is not None:
        qs = qs.filter(actor=actor)
    return qs.order_by("-id")


def insurer_exchanges(
    *, insurer_code: str | None = None, endorsement_id: int | None = None, failed_only: bool = False
) -> QuerySet[InsurerExchangeEvent]:
    """Exchanges newest first; `failed_only`: an error or a non-2xx response."""
    qs = InsurerExchangeEvent.objects.all()
    if insurer_code is not None:
        qs = qs.filter(insurer_code=insurer_code)
    if endorsement_id is not None:
        qs = qs.filter(endorsement_id=endorsement_id)
    if failed_only:
        qs = qs.exclude(error="", response_status__gte=200, response_status__lt=300)
    return qs.order_by("-id")


def job_run_history(*, job: str, limit: int = 50) -> list[JobRunEvent]:
    """The newest events of one job (start and end rows), newest first."""
    return list(JobRunEvent.objects.filter(job=job).order_by("-id")[:limit])


def last_job_runs(limit: int = 20) -> list[JobRunEvent]:
    """Per job, its latest run: the end event, or the start event while that run is still going
    (status "running"). Most recently started job first.

    Two indexed queries whatever the table size: the newest start per job, then the end rows of those runs.
    """
    latest_start_ids = list(
        JobRunEvent.objects.filter(phase=JobPhase.START)
        .values("job")
        .annotate(last=Max("id"))
        .order_by("-last")
        .values_list("last", flat=True)[:limit]
    )
    starts = list(JobRunEvent.objects.filter(pk__in=latest_start_ids).order_by("-id"))
    ends = {
        e.run_id: e
        for e in JobRunEvent.objects.filter(run_id__in=[s.run_id for s in starts], phase=JobPhase.END).order_by("id")
    }
    return [ends.get(start.run_id, start) for start in starts]


def chain_heads() -> list[AuditChainHead]:
    """Each stream's sealed position and head hash — what operators copy to external storage."""
    return list(AuditChainHead.objects.order_by("stream"))
