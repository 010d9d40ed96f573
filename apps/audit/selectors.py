from __future__ import annotations

from django.db.models import Max

from apps.audit.models import JobRunEvent


def last_job_runs(limit: int = 20) -> list[JobRunEvent]:
    """The newest event of each job: its end event, or its start event while it is still running."""
    latest_ids = JobRunEvent.objects.values("job").annotate(last=Max("id")).values_list("last", flat=True)
    return list(JobRunEvent.objects.filter(pk__in=list(latest_ids)).order_by("-created_at")[:limit])
