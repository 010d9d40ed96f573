"""Insurer metrics (issue 14).

- `keel_insurer_calls_total{insurer,outcome}` and `keel_insurer_call_seconds{insurer,outcome}`: every call
  through `guarded_call` (all protocols), outcome `ok`, `error` (the call raised) or `circuit_open` (refused
  without calling out). Event metrics: observed in the worker that made the call.
- `keel_insurer_circuit_state{insurer}`: 0 closed, 1 half-open, 2 open; read at scrape time from the shared
  breaker state (Redis/cache), so every process reports the same.
- `keel_insurer_result_files_quarantined{insurer}`: result files quarantined so far (all time, issue 11), read
  at scrape time from the `ResultFile` rows (one grouped query), so it is right under the multiprocess setup
  and after a restart; alert on `increase(...[15m]) > 0`. Insurers with none are reported as 0.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CALLS = Counter("keel_insurer_calls", "Calls to insurers by outcome", ["insurer", "outcome"])
CALL_SECONDS = Histogram(
    "keel_insurer_call_seconds",
    "Duration of a call to an insurer",
    ["insurer", "outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CIRCUIT_VALUES = {"closed": 0, "half_open": 1, "open": 2}


class CircuitCollector(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("keel_insurer_circuit_state", "0 closed, 1 half-open, 2 open", labels=["insurer"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from apps.insurers.models import Insurer
        from apps.insurers.resilience import circuit_state

        family = GaugeMetricFamily("keel_insurer_circuit_state", "0 closed, 1 half-open, 2 open", labels=["insurer"])
        try:
            for insurer in Insurer.objects.filter(is_active=True).order_by("code"):
                family.add_metric([insurer.code], CIRCUIT_VALUES.get(circuit_state(insurer.code)["state"], 2))
        except Exception:
            return
        yield family


class QuarantinedFilesCollector(Collector):
    NAME = "keel_insurer_result_files_quarantined"
    HELP = "Result files quarantined (all time) by insurer"

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(self.NAME, self.HELP, labels=["insurer"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from apps.insurers.models import InsurerProtocol
        from apps.insurers.selectors import insurers_active, result_files_quarantined_by_insurer

        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["insurer"])
        try:
            counts = result_files_quarantined_by_insurer()
            codes = {i.code for i in insurers_active().filter(protocol=InsurerProtocol.FILE)} | set(counts)
            for code in sorted(codes):
                family.add_metric([code], counts.get(code, 0))
        except Exception:
            return
        yield family


def register_collector() -> None:
    from apps.common.metrics import register_scrape_collector

    register_scrape_collector("insurers", CircuitCollector())
    register_scrape_collector("insurers_result_files", QuarantinedFilesCollector())
