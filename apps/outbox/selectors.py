"""Reads of the outbox: the figures behind `manage.py outbox_stats`, the metrics and the ops dashboard."""

from __future__ import annotations

from typing import Any

from django.db.models import Count, Min, Q
from django.utils import timezone

from apps.outbox.models import UNFINISHED, OutboxMessage, OutboxStatus


def outbox_stats(*, include_done: bool = True) -> dict[str, Any]:
    """Counts by status and `oldest_pending_age_seconds`.

    One aggregate over the unfinished rows only (pending/inflight/dead — small in a healthy system, served by
    the partial indexes), so a Prometheus scrape stays cheap however many done rows retention still keeps;
    `include_done` adds a second count over done rows (an index-only scan of their partial index).

    `oldest_pending_age_seconds` is how long the oldest **due** pending row has waited since it became due
    (`now - available_at`): relay lag, or a key blocked behind a dead row. Rows waiting out a retry backoff
    are not late, so they do not count.
    """
    now = timezone.now()
    figures = OutboxMessage.objects.filter(status__in=UNFINISHED).aggregate(
        pending=Count("id", filter=Q(status=OutboxStatus.PENDING)),
        inflight=Count("id", filter=Q(status=OutboxStatus.INFLIGHT)),
        dead=Count("id", filter=Q(status=OutboxStatus.DEAD)),
        oldest_due=Min("available_at", filter=Q(status=OutboxStatus.PENDING, available_at__lte=now)),
    )
    oldest_due = figures.pop("oldest_due")
    stats: dict[str, Any] = {
        "pending": figures["pending"],
        "inflight": figures["inflight"],
        "dead": figures["dead"],
        "done": OutboxMessage.objects.filter(status=OutboxStatus.DONE).count() if include_done else None,
        "oldest_pending_age_seconds": round(max(0.0, (now - oldest_due).total_seconds()), 3) if oldest_due else 0.0,
    }
    return stats
