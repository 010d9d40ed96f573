from __future__ import annotations

import time

import pytest
from django.test import override_settings

pytestmark = pytest.mark.django_db


def test_health_is_200_without_dependencies(client):
    response = client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_ready_reports_each_dependency_with_status_and_latency(client):
    response = client.get("/ready")

    assert response.status_code == 200, response.json()
    checks = response.json()["checks"]
    assert set(checks) == {"database", "cache", "broker"}
    for check in checks.values():
        assert check["status"] == "up"
        assert check["latency_ms"] >= 0


@pytest.mark.redis
def test_ready_is_200_degraded_naming_redis_when_cache_and_broker_point_at_a_closed_port(client):
    closed = "redis://127.0.0.1:1/0"
    caches = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": closed,
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }
    with override_settings(CACHES=caches, CELERY_BROKER_URL=closed):
        started = time.perf_counter()
        response = client.get("/ready")
        elapsed = time.perf_counter() - started

    # Writes still commit to the outbox in PostgreSQL: a load balancer must keep this process (SPEC §2).
    assert response.status_code == 200
    assert elapsed < 2.0
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["cache"] == {**body["checks"]["cache"], "status": "degraded", "backend": "redis"}
    assert body["checks"]["broker"]["status"] == "degraded"
    assert body["checks"]["broker"]["backend"] == "redis"
    assert body["checks"]["database"]["status"] == "up"
    assert "redis" in body["detail"]


def test_ready_is_503_with_retry_after_within_two_seconds_when_the_database_is_down(client, monkeypatch):
    from django.db import OperationalError

    from apps.common import health

    def database_down() -> dict:
        raise OperationalError("connection refused")

    monkeypatch.setitem(health.CHECKS, "database", database_down)
    started = time.perf_counter()
    response = client.get("/ready")

    assert time.perf_counter() - started < 2.0
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["database"]["status"] == "down"
    assert body["detail"].startswith("down: database")


def test_ready_reports_a_check_that_hangs_as_down_at_the_deadline(client, monkeypatch):
    from apps.common import health

    def hangs() -> dict:
        time.sleep(3)
        return {}

    monkeypatch.setitem(health.CHECKS, "broker", hangs)
    started = time.perf_counter()
    response = client.get("/ready")

    assert time.perf_counter() - started < 2.0
    assert response.status_code == 200
    assert response.json()["checks"]["broker"]["status"] == "degraded"
    assert "no answer within" in response.json()["checks"]["broker"]["error"]


def test_metrics_exposes_prometheus_text(client):
    response = client.get("/metrics")

    assert response.status_code == 200
    text = response.content.decode()
    assert "django_http_requests_total_by_method_total" in text or "django_http_requests" in text


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics"])
@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_a_probe_answers_another_method_with_a_405_problem_not_a_csrf_page(path, method):
    """A CSRF-enforcing client (a browser's cookie session) still gets the 405: these addresses take no cookie."""
    from django.test import Client

    response = getattr(Client(enforce_csrf_checks=True), method)(path)

    assert response.status_code == 405
    assert response["Content-Type"] == "application/problem+json"
    assert response["Allow"] == "GET, HEAD"
    assert response.json()["detail"] == f"Method {method.upper()} is not allowed here; use GET."


@pytest.mark.parametrize("path", ["/health", "/ready", "/metrics"])
def test_a_probe_answers_head(client, path):
    assert client.head(path).status_code == 200
