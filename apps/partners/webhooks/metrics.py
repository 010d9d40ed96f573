"""Webhook delivery metrics (issue 14): `keel_webhook_deliveries_total{outcome}`, counted by the dispatcher
process that recorded the outcome, once its transaction commits (multiprocess-merged on `/metrics`,
`apps.common.metrics`). Outcomes: `delivered` (a 2xx), `retry` (an attempt failed, another is scheduled),
`failed` (given up: 410 Gone or the retry window passed)."""

from __future__ import annotations

from prometheus_client import Counter

from apps.common.metrics import inc_on_commit

DELIVERIES = Counter("keel_webhook_deliveries", "Webhook delivery outcomes recorded", ["outcome"])


def deliveries_recorded(*, delivered: int, retry: int, failed: int) -> None:
    """Count one dispatcher run's outcomes after the current transaction commits (nothing on rollback)."""

    def increment() -> None:
        for outcome, n in (("delivered", delivered), ("retry", retry), ("failed", failed)):
            if n:
                DELIVERIES.labels(outcome).inc(n)

    inc_on_commit(increment)
