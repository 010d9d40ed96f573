"""Endorsement metrics (issue 14). State, computed at scrape time from the database:

- `keel_endorsements{status,type}`: endorsements per status and type (the rollup's sums on PostgreSQL, ADR
  0047; one GROUP BY over the endorsements elsewhere; the per-stage latency
  of the pipeline is `keel_outbox_consumer_seconds{topic="endorsements.…"}`, observed by the consumers).
- `keel_endorsements_received_last_hour` and `keel_endorsements_failed_last_hour`: the FAILED-rate alert's
  inputs (`docs/ops/alerts.yml`), over the `created_at` / `updated_at` indexes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import timedelta

from django.db.models import Count
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

BY_STATUS = ("keel_endorsements", "Endorsements per status and type")
RECEIVED = ("keel_endorsements_received_last_hour", "Endorsements received in the last hour")
FAILED = ("keel_endorsements_failed_last_hour", "Endorsements that became FAILED in the last hour")


class EndorsementCollector(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("keel_endorsements", "Endorsements per status and type", labels=["status", "type"])
        yield GaugeMetricFamily("keel_endorsements_received_last_hour", "Endorsements received in the last hour")
        yield GaugeMetricFamily(
            "keel_endorsements_failed_last_hour", "Endorsements that became FAILED in the last hour"
        )

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from apps.endorsements.models import Endorsement, EndorsementStatus
        from apps.endorsements.rollup import rollup_available, rollup_status_type_counts

        try:
            since = timezone.now() - timedelta(hours=1)
            rows: Iterable[tuple[str, str, int]]
            if rollup_available():  # ADR 0047: a few thousand rollup rows instead of every endorsement
                rows = [(s, t, n) for (s, t), n in sorted(rollup_status_type_counts().items())]
            else:
                rows = Endorsement.objects.order_by().values_list("status", "type").annotate(n=Count("id"))
            family = GaugeMetricFamily(
                "keel_endorsements", "Endorsements per status and type", labels=["status", "type"]
            )
            for status, type_, n in rows:
                family.add_metric([status, type_], n)
            received = Endorsement.objects.filter(created_at__gte=since).count()
            failed = Endorsement.objects.filter(status=EndorsementStatus.FAILED, updated_at__gte=since).count()
        except Exception:  # the database is down: /ready reports it; the other metrics must still render
            return
        yield family
        yield GaugeMetricFamily(
            "keel_endorsements_received_last_hour", "Endorsements received in the last hour", value=received
        )
        yield GaugeMetricFamily(
            "keel_endorsements_failed_last_hour", "Endorsements that became FAILED in the last hour", value=failed
        )


def register_collector() -> None:
    from apps.common.metrics import register_scrape_collector

    register_scrape_collector("endorsements", EndorsementCollector())
