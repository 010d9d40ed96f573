"""Prometheus metrics: pending/oldest-age/dead gauges read at scrape time, commit→publish histogram."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import REGISTRY, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

COMMIT_TO_PUBLISH = Histogram(
    "keel_outbox_commit_to_publish_seconds",
    "Time from an outbox row's creation (inside its transaction) to its publication by a relay",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


_GAUGES = {
    "keel_outbox_pending": "Outbox rows waiting to be published",
    "keel_outbox_inflight": "Outbox rows published and not yet consumed",
    "keel_outbox_dead": "Outbox rows out of attempts",
    "keel_outbox_oldest_pending_age_seconds": "Age of the oldest pending outbox row",
}


class OutboxCollector(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily]:
        """Names only: lets the registry check for clashes without querying the database at start-up."""
        for name, documentation in _GAUGES.items():
            yield GaugeMetricFamily(name, documentation)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from apps.outbox.selectors import outbox_stats

        try:
            stats = outbox_stats()
        except Exception:  # the database is down: /ready reports it; metrics must still render
            return
        yield GaugeMetricFamily("keel_outbox_pending", "Outbox rows waiting to be published", value=stats["pending"])
        yield GaugeMetricFamily(
            "keel_outbox_inflight", "Outbox rows published and not yet consumed", value=stats["inflight"]
        )
        yield GaugeMetricFamily("keel_outbox_dead", "Outbox rows out of attempts", value=stats["dead"])
        yield GaugeMetricFamily(
            "keel_outbox_oldest_pending_age_seconds",
            "Age of the oldest pending outbox row",
            value=stats["oldest_pending_age_seconds"],
        )


_registered = False


def register_collector() -> None:
    global _registered
    if not _registered:
        REGISTRY.register(OutboxCollector())
        _registered = True
