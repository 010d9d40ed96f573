"""Prometheus plumbing shared by every app (the metric definitions live in `apps/<app>/metrics.py`).

Two kinds of series:

- **Event metrics** (counters, histograms) are incremented by the process that did the work: a gunicorn
  worker, a Celery worker, the relay. With `PROMETHEUS_MULTIPROC_DIR` set (docker-compose, the Dockerfile,
  `make run`), prometheus_client writes them to per-process files in that folder and `/metrics` on any web
  process merges every file (`MultiProcessCollector`), so a histogram observed in a worker shows on the web
  process's `/metrics` (issue 14). Without it (tests, a bare `manage.py runserver`) they stay in-process.
- **State metrics** (outbox backlog, endorsements per status, circuit state, low-balance accounts) are
  computed at scrape time from the database or Redis by collectors registered with
  `register_scrape_collector`: every process reports the same truth and nothing has to keep them current.

`inc_on_commit` counts an event only once its transaction commits (a rolled-back write counted nothing).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from django.db import transaction
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_scrape_collectors: dict[str, Collector] = {}


def multiprocess_dir() -> str | None:
    path = os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())
    return path if path and os.path.isdir(path) else None


def register_scrape_collector(name: str, collector: Collector) -> None:
    """Register a scrape-time collector once per process (AppConfig.ready() may run more than once)."""
    if name in _scrape_collectors:
        return
    _scrape_collectors[name] = collector
    REGISTRY.register(collector)


def render_latest() -> bytes:
    """The exposition text of this host: the merged per-process files plus the scrape-time collectors in
    multiprocess mode; the default registry (which holds both) otherwise."""
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)
    for collector in _scrape_collectors.values():
        registry.register(collector)
    return generate_latest(registry)


def inc_on_commit(increment: Callable[[], None]) -> None:
    """Run `increment` after the current transaction commits (at once outside a transaction)."""
    transaction.on_commit(increment)


def mark_process_dead(pid: int) -> None:
    """gunicorn `child_exit` hook: drop a dead worker's live-gauge files (counters/histograms are kept)."""
    if multiprocess_dir() is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def start_metrics_server_from_env() -> int | None:
    """Serve this host's /metrics on `KEEL_METRICS_PORT` from a daemon thread (Celery workers and the relay
    in docker-compose, each container its own scrape target: docs/ops/scrape-targets.md). Returns the port."""
    port = os.environ.get("KEEL_METRICS_PORT")
    if not port:
        return None
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from prometheus_client import CONTENT_TYPE_LATEST

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = render_latest()
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE_LATEST)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # scrapes are not worth a log line
            return

    server = ThreadingHTTPServer((os.environ.get("KEEL_METRICS_BIND", "0.0.0.0"), int(port)), Handler)  # noqa: S104
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return int(port)


def connect_celery_metrics_server() -> None:
    """Start the metrics server once a Celery worker process is ready (connected from AppConfig.ready)."""
    from celery.signals import worker_ready

    def on_ready(**_: object) -> None:
        start_metrics_server_from_env()

    worker_ready.connect(on_ready, weak=False, dispatch_uid="keel-metrics-server")
