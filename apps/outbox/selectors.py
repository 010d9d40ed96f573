from __future__ import annotations

from typing import Any

from django.db.models import Count, Min
from django.utils import timezone

from apps.outbox.models import OutboxMessage, OutboxStatus


def outbox_stats() -> dict[str, Any]:
    """Counts by status and the age of the oldest pending row (one GROUP BY over unfinished rows + done)."""
    rows = OutboxMessage.objects.values("status").annotate(n=Count("id"), oldest=Min("created_at")).order_by()
    stats: dict[str, Any] = {s.value: 0 for s in OutboxStatus}
    oldest = None
    for row in rows:
        stats[row["status"]] = row["n"]
        if row["status"] == OutboxStatus.PENDING:
            oldest = row["oldest"]
    stats["oldest_pending_age_seconds"] = (
        round((timezone.now() - oldest).total_seconds(), 3) if oldest is not None else 0.0
    )
    return stats
