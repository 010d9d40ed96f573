"""gunicorn settings read with `--config python:config.gunicorn` (Dockerfile).

Prometheus multiprocess mode (issue 14): every worker writes its metrics to PROMETHEUS_MULTIPROC_DIR and
/metrics merges them; a worker that exits has its live-gauge files dropped here.
"""

from __future__ import annotations

from typing import Any


def child_exit(server: Any, worker: Any) -> None:
    from apps.common.metrics import mark_process_dead

    mark_process_dead(worker.pid)
