"""Job-run metrics (issue 14), computed at scrape time from the audit job-run stream (`last_job_runs`: two
indexed queries): `keel_job_last_run_failed{job}` (1 when the job's latest run failed) and
`keel_job_last_run_timestamp_seconds{job}` (when it started or ended). The `ledger_verify` alert reads them."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

FAILED = ("keel_job_last_run_failed", "1 when the latest run of the job failed")
AT = ("keel_job_last_run_timestamp_seconds", "Unix time of the latest run's last event")


class JobRunCollector(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(*FAILED, labels=["job"])
        yield GaugeMetricFamily(*AT, labels=["job"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from apps.audit.models import JobStatus
        from apps.audit.selectors import last_job_runs

        failed = GaugeMetricFamily(*FAILED, labels=["job"])
        at = GaugeMetricFamily(*AT, labels=["job"])
        try:
            for run in last_job_runs(limit=50):
                failed.add_metric([run.job], 1.0 if run.status == JobStatus.FAILED else 0.0)
                at.add_metric([run.job], run.created_at.timestamp())
        except Exception:
            return
        yield failed
        yield at


def register_collector() -> None:
    from apps.common.metrics import register_scrape_collector

    register_scrape_collector("audit", JobRunCollector())
