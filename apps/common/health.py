"""`/health` (liveness, touches nothing), `/ready` (database, cache, broker) and `/metrics`.

`/ready` answers within CHECK_TIMEOUT_SECONDS whatever is down (SPEC §2): the three checks run at once in
worker threads and a check still running at the deadline is reported `down` (timeout). It is **503 only when
the database is unreachable** — this web process cannot serve anything then. Cache or broker down → 200
with status `degraded` and that dependency `down`: writes still commit with their outbox rows in
PostgreSQL, so a load balancer must keep this process (ADR 0026).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from kombu import Connection
from prometheus_client import CONTENT_TYPE_LATEST

from apps.common.errors import problem_response
from apps.common.metrics import render_latest

CHECK_TIMEOUT_SECONDS = 2.0
# The whole of /ready, all checks together: under CHECK_TIMEOUT_SECONDS with room for the response.
READY_DEADLINE_SECONDS = 1.6
# Without the database nothing can be served; without these the API still accepts writes (degraded).
CRITICAL = frozenset({"database"})
_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="ready-check")


def _probe(view: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """GET and HEAD only: another method is a 405 problem+json with `Allow: GET, HEAD` — not the CSRF
    middleware's HTML 403 page, which a POST used to get (these addresses change nothing and take no cookie)."""

    @functools.wraps(view)
    def probe(request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            method = (request.method or "")[:16]
            refused = problem_response(request, 405, f"Method {method} is not allowed here; use GET.")
            refused["Allow"] = "GET, HEAD"
            return refused
        return view(request)

    return csrf_exempt(never_cache(probe))


def _backend_name(url: str) -> str:
    scheme = urlsplit(url).scheme or url.split(":", 1)[0]
    return {"rediss": "redis", "amqp": "rabbitmq", "pyamqp": "rabbitmq"}.get(scheme, scheme)


def check_database() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    finally:
        connection.close()  # this runs in a checker thread: give the connection back to the pool
    return {"backend": connection.vendor}


def check_cache() -> dict[str, Any]:
    location = settings.CACHES["default"]["BACKEND"]
    backend = "redis" if "redis" in location.lower() else location.rsplit(".", 2)[-2]
    key = "health:ready"
    cache.set(key, "1", timeout=10)
    if cache.get(key) != "1":
        raise RuntimeError(f"{backend} cache did not return the value just written")
    return {"backend": backend}


def check_broker() -> dict[str, Any]:
    url = settings.CELERY_BROKER_URL
    backend = _backend_name(url)
    if backend == "memory":
        return {"backend": backend}
    with Connection(
        url, connect_timeout=READY_DEADLINE_SECONDS, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS
    ) as conn:
        conn.ensure_connection(max_retries=1, timeout=READY_DEADLINE_SECONDS)  # type: ignore[arg-type]
        conn.default_channel  # noqa: B018 - opens a channel: a real round trip to the broker
    return {"backend": backend}


CHECKS: dict[str, Callable[[], dict[str, Any]]] = {
    "database": check_database,
    "cache": check_cache,
    "broker": check_broker,
}


def _backend_of(name: str) -> str:
    if name == "cache":
        return "redis" if "redis" in settings.CACHES["default"]["BACKEND"].lower() else "cache"
    if name == "broker":
        return _backend_name(settings.CELERY_BROKER_URL)
    return str(connection.vendor)


def _run(check: Callable[[], dict[str, Any]], name: str) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = {"status": "up", **check()}
    except Exception as exc:  # every failure is reported, none raised
        result = {"status": "down", "error": f"{type(exc).__name__}: {exc}"[:300], "backend": _backend_of(name)}
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


def run_checks(deadline_seconds: float = READY_DEADLINE_SECONDS) -> dict[str, dict[str, Any]]:
    """Every check at once; a check not finished by the deadline is `down` with a timeout error."""
    started = time.perf_counter()
    futures = {name: _executor.submit(_run, check, name) for name, check in CHECKS.items()}
    results: dict[str, dict[str, Any]] = {}
    for name, future in futures.items():
        remaining = max(0.0, deadline_seconds - (time.perf_counter() - started))
        try:
            results[name] = future.result(timeout=remaining)
        except FutureTimeout:
            results[name] = {
                "status": "down",
                "error": f"no answer within {deadline_seconds:g}s",
                "backend": _backend_of(name),
                "latency_ms": round((time.perf_counter() - started) * 1000, 2),
            }
    return results


@_probe
def liveness(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@_probe
def readiness(request: HttpRequest) -> JsonResponse:
    checks = run_checks()
    down = sorted(name for name, c in checks.items() if c["status"] != "up")
    unavailable = any(name in CRITICAL for name in down)
    for name in down:
        if name not in CRITICAL:
            checks[name]["status"] = "degraded"  # down, but the API still serves and accepts writes
    status = "unavailable" if unavailable else "degraded" if down else "ready"
    body: dict[str, Any] = {"status": status, "checks": checks}
    if down:
        body["detail"] = "down: " + ", ".join(f"{name} ({checks[name]['backend']})" for name in down)
    response = JsonResponse(body, status=503 if unavailable else 200)
    if unavailable:
        response["Retry-After"] = "5"
    return response


@_probe
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition of this host: every process's event metrics merged in multiprocess mode, plus
    the scrape-time state metrics (apps.common.metrics)."""
    return HttpResponse(render_latest(), content_type=CONTENT_TYPE_LATEST)
