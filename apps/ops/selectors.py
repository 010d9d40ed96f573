"""What the /ops/ dashboard shows (SPEC §11, issue 14): one function per panel, each reading through the
owning app's selectors. `dashboard()` assembles them; every panel is independent, so one failing source
(Redis down, the broker unreachable) renders as an error in its own panel and not as a 500.

Cost at scale (1,000,000 endorsements, 100,000 outbox rows, 5,000 employers; `bench/analytics.py`): the
funnel and the hourly chart sum the hourly rollup's whole hours (ADR 0047) and count only the unfinished edge
hours from the rows, the attention counts read the status index, the outbox is one aggregate over the
unfinished rows' partial indexes; the other panels read a handful of rows.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone
from kombu import Connection

from apps.audit.selectors import last_job_runs
from apps.endorsements.analytics import (
    batches_running,
    endorsement_funnel,
    endorsement_status_counts,
    endorsements_per_hour,
)
from apps.endorsements.contracts import EndorsementStatus
from apps.insurers.resilience import circuit_state
from apps.insurers.selectors import insurer_conflicts_unresolved, insurers_active, result_files_quarantined_by_insurer
from apps.ledger.selectors import low_balance_employers
from apps.outbox.selectors import outbox_stats
from apps.partners.webhooks.selectors import webhook_deliveries_recent
from apps.reconciliation.selectors import reconciliation_runs_recent

# The funnel's main path, in pipeline order; the side exits are shown beside it.
FUNNEL_PATH = (
    EndorsementStatus.RECEIVED,
    EndorsementStatus.VALIDATED,
    EndorsementStatus.FUNDS_LOCKED,
    EndorsementStatus.SENT,
    EndorsementStatus.CONFIRMED,
    EndorsementStatus.ACTIVE,
)
FUNNEL_SIDE = (
    EndorsementStatus.ON_HOLD_FUNDS,
    EndorsementStatus.ON_HOLD_REVIEW,
    EndorsementStatus.REJECTED,
    EndorsementStatus.FAILED,
    EndorsementStatus.CANCELLED,
)
ATTENTION = (EndorsementStatus.FAILED, EndorsementStatus.ON_HOLD_FUNDS, EndorsementStatus.ON_HOLD_REVIEW)
QUEUE_TIMEOUT_SECONDS = 1.0
CHART_WIDTH, CHART_HEIGHT = 720, 160


@dataclass
class Panel:
    name: str
    data: Any = None
    error: str | None = None
    ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _panel(name: str, read: Callable[[], Any]) -> Panel:
    started = time.perf_counter()
    try:
        with transaction.atomic():  # a savepoint: a failing panel leaves the snapshot usable for the others
            data = read()
        return Panel(name=name, data=data, ms=round((time.perf_counter() - started) * 1000, 1))
    except Exception as exc:  # one broken source must not take the dashboard down
        return Panel(name=name, error=f"{type(exc).__name__}: {exc}"[:200])


def queue_depths() -> list[dict[str, Any]]:
    """Messages waiting in each Celery queue (`settings.KEEL_QUEUES`), asked of the broker with a passive
    declare, which every kombu transport answers (Redis LLEN, the file-system transport's folder count)."""
    depths = []
    with Connection(
        settings.CELERY_BROKER_URL,
        connect_timeout=QUEUE_TIMEOUT_SECONDS,
        transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS,
    ) as conn:
        conn.ensure_connection(max_retries=1, timeout=int(QUEUE_TIMEOUT_SECONDS) or 1)
        channel = conn.default_channel
        for name in settings.KEEL_QUEUES:
            try:
                declared = channel.queue_declare(queue=name, passive=True)  # type: ignore[attr-defined]
                depth: int | None = declared.message_count
            except Exception:  # a queue never declared on this broker holds nothing yet
                depth = 0
            depths.append({"queue": name, "depth": depth})
    return depths


def funnel(now: datetime) -> dict[str, Any]:
    """The last 24 hours' endorsements by current state (the pipeline as it is now; the same rows as the
    chart), and the all-time FAILED / ON_HOLD counts an operator must act on, each linking to its admin list."""
    counts = endorsement_funnel(since=now - timedelta(hours=24), now=now)
    attention = endorsement_status_counts(ATTENTION)
    widest = max([counts[s] for s in FUNNEL_PATH] + [1])
    admin_list = reverse("admin:endorsements_endorsement_changelist")
    return {
        "path": [{"status": s, "count": counts[s], "pct": round(100 * counts[s] / widest, 1)} for s in FUNNEL_PATH],
        "side": [{"status": s, "count": counts[s]} for s in FUNNEL_SIDE],
        "attention": [
            {"status": s, "count": attention[s], "url": f"{admin_list}?status__exact={s}"} for s in ATTENTION
        ],
        "total": sum(counts.values()),
    }


def hourly_chart(now: datetime | None = None) -> dict[str, Any]:
    """The 24-hour chart as ready-to-draw SVG bars (server-rendered: no chart library, nothing to load)."""
    hours = endorsements_per_hour(now=now)
    peak = max([h["count"] for h in hours] + [1])
    slot = CHART_WIDTH / len(hours)
    bars = []
    for i, h in enumerate(hours):
        height = round((CHART_HEIGHT - 20) * h["count"] / peak, 1)
        bars.append(
            {
                "x": round(i * slot + 2, 1),
                "y": round(CHART_HEIGHT - 16 - height, 1),
                "width": round(slot - 4, 1),
                "height": height,
                "count": h["count"],
                "label": h["hour"].strftime("%H"),
                "title": f"{h['hour']:%d %b %H:00} IST: {h['count']}",
            }
        )
    return {
        "bars": bars,
        "peak": peak,
        "total": sum(h["count"] for h in hours),
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "baseline": CHART_HEIGHT - 16,
    }


def circuits() -> list[dict[str, Any]]:
    return [{"insurer": i.code, "name": i.name, **circuit_state(i.code)} for i in insurers_active()]


def low_balance() -> dict[str, Any]:
    count, balances = low_balance_employers(limit=10)
    return {"count": count, "employers": balances}


def conflicts() -> dict[str, Any]:
    count, rows = insurer_conflicts_unresolved(limit=10)
    return {"count": count, "rows": rows}


def dashboard(now: datetime | None = None) -> dict[str, Panel]:
    """Every panel of /ops/, keyed by name, read from ONE snapshot on PostgreSQL (REPEATABLE READ, read only),
    so the funnel, the batches and the outbox agree with each other even while the pipeline moves."""
    now = now or timezone.now()
    nested = connection.in_atomic_block  # e.g. a test's transaction: its snapshot is already one
    with transaction.atomic():
        if connection.vendor == "postgresql" and not nested:
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return _panels(now)


def _panels(now: datetime) -> dict[str, Panel]:
    readers: dict[str, Callable[[], Any]] = {
        "outbox": lambda: outbox_stats(include_done=False),
        "queues": queue_depths,
        "funnel": lambda: funnel(now),
        "chart": lambda: hourly_chart(now),
        "batches": lambda: batches_running(limit=10),
        "reconciliations": lambda: reconciliation_runs_recent(limit=10),
        "low_balance": low_balance,
        "circuits": circuits,
        "jobs": lambda: last_job_runs(limit=12),
        "conflicts": conflicts,
        "webhooks": lambda: webhook_deliveries_recent(limit=10),
        "quarantined_files": lambda: sum(result_files_quarantined_by_insurer().values()),
    }
    return {name: _panel(name, read) for name, read in readers.items()}
