"""Prometheus metrics (served by django-prometheus at /metrics).

- Gauges `keel_outbox_pending`, `keel_outbox_inflight`, `keel_outbox_dead`,
  `keel_outbox_oldest_pending_age_seconds`: computed at scrape time by one cheap query
  (`selectors.outbox_stats(include_done=False)`), so every web process reports the same truth and nothing
  has to keep them up to date.
- Histogram `keel_outbox_consumer_seconds{topic,outcome}`: each consumer run (the pipeline's stage
  latency: `endorsements.process`, `endorsements.dispatch`, … are topics), observed by `deliver_envelope`.
- Histogram `keel_outbox_commit_to_publish_seconds`: observed by the relay for every published row
  (`created_at`, set inside the writer's transaction, → handed to the broker).
- Counters `keel_outbox_leases_renewed_total`, `keel_outbox_deferred_total{topic}`,
  `keel_outbox_carried_on_total{topic}` (rows a worker delivered itself after the consumer that wrote them,
  never published to the broker; ADR 0070) (per process).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

COMMIT_TO_PUBLISH = Histogram(
    "keel_outbox_commit_to_publish_seconds",
    "Time from an outbox row's creation (inside its transaction) to its publication by a relay",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)

CARRIED_ON = Counter(
    "keel_outbox_carried_on_total",
    "Outbox rows a worker claimed and delivered right after the consumer that wrote them (ADR 0070)",
    ["topic"],
)

LEASES_RENEWED = Counter(
    "keel_outbox_leases_renewed_total", "Outbox row leases extended by the worker holding the row (ADR 0024)"
)
DEFERRED = Counter(
    "keel_outbox_deferred_total",
    "Deliveries a consumer deferred without trying (circuit open, rate limit spent; no attempt counted)",
    ["topic"],
)

# Gauge name → (documentation, key in outbox_stats()).
_GAUGES = {
    "keel_outbox_pending": ("Outbox rows waiting to be published", "pending"),
    "keel_outbox_inflight": ("Outbox rows published and not yet consumed", "inflight"),
    "keel_outbox_dead": ("Outbox rows out of attempts, waiting for an operator", "dead"),
    "keel_outbox_oldest_pending_age_seconds": (
        "Seconds the oldest due pending outbox row has waited to be published",
        "oldest_pending_age_seconds",
    ),
}


class OutboxCollector(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily]:
        """Names only: lets the registry check for clashes without querying the database at start-up."""
        for name, (documentation, _) in _GAUGES.items():
            yield GaugeMetricFamily(name, documentation)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from apps.outbox.selectors import outbox_stats

        try:
            stats = outbox_stats(include_done=False)
        except Exception:  # the database is down: /ready reports it; the other metrics must still render
            return
        for name, (documentation, key) in _GAUGES.items():
            yield GaugeMetricFamily(name, documentation, value=float(stats[key]))


CONSUMER_SECONDS = Histogram(
    "keel_outbox_consumer_seconds",
    "Time a topic's consumer took for one message (pipeline stage latency), by topic and outcome",
    ["topic", "outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)


def register_collector() -> None:
    """Register the scrape-time collector once per process (AppConfig.ready() may run more than once)."""
    from apps.common.metrics import register_scrape_collector

    register_scrape_collector("outbox", OutboxCollector())
