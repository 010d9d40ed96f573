"""`/health` (liveness, touches nothing), `/ready` (database, cache, broker) and `/metrics`."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from kombu import Connection
from prometheus_client import CONTENT_TYPE_LATEST

from apps.common.metrics import render_latest

CHECK_TIMEOUT_SECONDS = 2.0


def _backend_name(url: str) -> str:
    scheme = urlsplit(url).scheme or url.split(":", 1)[0]
    return {"rediss": "redis", "amqp": "rabbitmq", "pyamqp": "rabbitmq"}.get(scheme, scheme)


def check_database() -> dict[str, Any]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()
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
        url, connect_timeout=CHECK_TIMEOUT_SECONDS, transport_options=settings.CELERY_BROKER_TRANSPORT_OPTIONS
    ) as conn:
        conn.ensure_connection(max_retries=1, timeout=int(CHECK_TIMEOUT_SECONDS))
        conn.default_channel  # noqa: B018 - opens a channel: a real round trip to the broker
    return {"backend": backend}


CHECKS: dict[str, Callable[[], dict[str, Any]]] = {
    "database": check_database,
    "cache": check_cache,
    "broker": check_broker,
}


def _run(check: Callable[[], dict[str, Any]], name: str) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        result = {"status": "up", **check()}
    except Exception as exc:  # every failure is reported, none raised
        result = {"status": "down", "error": f"{type(exc).__name__}: {exc}"[:300]}
        if name == "cache":
            result["backend"] = "redis" if "redis" in settings.CACHES["default"]["BACKEND"].lower() else "cache"
        elif name == "broker":
            result["backend"] = _backend_name(settings.CELERY_BROKER_URL)
        elif name == "database":
            result["backend"] = connection.vendor
    result["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return result


@never_cache
@require_GET
def liveness(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readiness(request: HttpRequest) -> JsonResponse:
    checks = {name: _run(check, name) for name, check in CHECKS.items()}
    down = sorted(f"{name} ({c['backend']})" for name, c in checks.items() if c["status"] != "up")
    body = {"status": "ready" if not down else "unavailable", "checks": checks}
    if down:
        body["detail"] = "down: " + ", ".join(down)
    return JsonResponse(body, status=503 if down else 200)


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition of this host: every process's event metrics merged in multiprocess mode, plus
    the scrape-time state metrics (apps.common.metrics)."""
    return HttpResponse(render_latest(), content_type=CONTENT_TYPE_LATEST)
