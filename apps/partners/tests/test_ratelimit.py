"""Every stage of the per-key rate limit, driven through a real endpoint with time-machine."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from apps.common.actors import Actor
from apps.partners.services import api_key_reset_rate_limits
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db

START = datetime(2026, 11, 23, 10, 0, 5, tzinfo=UTC)  # 5 s into a minute


@pytest.fixture
def client(make_key):
    partner = PartnerFactory(
        name="limited", rate_limit_per_minute=10, rate_limit_per_hour=1000, rate_limit_per_day=10000
    )
    return make_key(partner=partner, all_employers=True)


def hit(client, n: int = 1):
    return [client.get("/api/v1/employers") for _ in range(n)][-1]


def test_every_response_carries_ratelimit_headers(client, time_machine):
    time_machine.move_to(START, tick=False)

    response = hit(client)

    assert response.status_code == 200
    assert response["RateLimit-Limit"] == "10"
    assert response["RateLimit-Remaining"] == "9"
    assert response["RateLimit-Reset"] == "55"
    assert response["RateLimit-Policy"] == "10;w=60, 1000;w=3600, 10000;w=86400"
    assert "RateLimit-Warning" not in response


def test_warning_header_from_80_percent(client, time_machine):
    time_machine.move_to(START, tick=False)

    seventh = hit(client, 7)
    eighth = hit(client)

    assert "RateLimit-Warning" not in seventh
    assert eighth.status_code == 200
    assert eighth["RateLimit-Warning"] == "80% of the per-minute limit used"
    assert eighth["RateLimit-Remaining"] == "2"


def test_up_to_110_percent_is_allowed_in_grace_then_429(client, time_machine):
    time_machine.move_to(START, tick=False)
    hit(client, 10)

    eleventh = hit(client)
    twelfth = hit(client)

    assert eleventh.status_code == 200
    assert "grace period ends in 300s" in eleventh["RateLimit-Warning"]
    assert twelfth.status_code == 429
    assert twelfth["Content-Type"] == "application/problem+json"
    assert twelfth["Retry-After"] == "55"
    assert twelfth["RateLimit-Remaining"] == "0"


def test_grace_lasts_at_most_five_minutes(client, time_machine):
    time_machine.move_to(START, tick=False)
    hit(client, 11)  # the 11th opens the grace period

    time_machine.move_to(START + timedelta(minutes=4), tick=False)
    within = hit(client, 11)
    time_machine.move_to(START + timedelta(minutes=6), tick=False)
    after = hit(client, 11)

    assert within.status_code == 200
    assert after.status_code == 429
    assert after["Retry-After"] == "55"


def test_new_window_resets_the_count(client, time_machine):
    time_machine.move_to(START, tick=False)
    hit(client, 12)

    time_machine.move_to(START + timedelta(minutes=1), tick=False)

    assert hit(client).status_code == 200


def test_operator_reset_clears_counters_and_grace(client, time_machine):
    time_machine.move_to(START, tick=False)
    assert hit(client, 12).status_code == 429

    api_key_reset_rate_limits(api_key=client.api_key, actor=Actor.system("tests"))

    response = hit(client)
    assert response.status_code == 200
    assert response["RateLimit-Remaining"] == "9"


def test_limits_are_per_key(client, make_key, time_machine):
    time_machine.move_to(START, tick=False)
    other = make_key(partner=client.api_key.partner, all_employers=True)
    hit(client, 12)

    assert hit(other).status_code == 200


@pytest.mark.parametrize(
    "backend", ["default", {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "rl-test"}]
)
def test_counters_count_per_window_on_redis_and_on_other_caches(backend, settings, time_machine):
    from django.core.cache import cache

    from apps.partners.ratelimit import rate_limit_hit

    if backend != "default":
        settings.CACHES = {"default": backend}
    time_machine.move_to(datetime(2026, 6, 1, 10, 0, 30, tzinfo=UTC), tick=False)
    limits = {"minute": 10, "hour": 100, "day": 1000}

    counts = [[u.count for u in rate_limit_hit(key_prefix="abc", limits=limits).usage] for _ in range(3)]
    time_machine.move_to(datetime(2026, 6, 1, 10, 1, 5, tzinfo=UTC), tick=False)
    next_minute = [u.count for u in rate_limit_hit(key_prefix="abc", limits=limits).usage]

    assert counts == [[1, 1, 1], [2, 2, 2], [3, 3, 3]]
    assert next_minute == [1, 4, 4]
    if backend == "default" and hasattr(cache, "client"):  # Redis: each counter expires with its window
        redis = cache.client.get_client()
        ttl = redis.ttl(
            cache.make_key(f"rl:abc:minute:{int(datetime(2026, 6, 1, 10, 1, 5, tzinfo=UTC).timestamp() // 60)}")
        )
        assert 0 < ttl <= 120


@pytest.mark.django_db(transaction=True)
def test_redis_down_the_limit_falls_back_to_a_local_count_and_nothing_answers_500(client, time_machine, monkeypatch):
    """ADR 0026: the shared counter store being away costs neither a 500 nor the limit itself."""
    from django.core.cache import cache

    from apps.partners import ratelimit

    def redis_down(*args, **kwargs):
        raise ConnectionError("Error 111 connecting to redis. Connection refused.")

    monkeypatch.setattr(ratelimit, "_local_cache", ratelimit.LocMemCache("test-fallback", {}))
    for name in ("incr", "add", "get", "get_many", "set", "delete_many"):
        monkeypatch.setattr(cache, name, redis_down)
    if hasattr(cache, "client"):
        monkeypatch.setattr(cache.client, "get_client", redis_down)
    before = ratelimit.FALLBACK_USED._value.get()
    time_machine.move_to(START, tick=False)

    responses = [hit(client) for _ in range(12)]

    assert [r.status_code for r in responses[:11]] == [200] * 11  # 10 + grace, counted locally
    assert responses[0]["RateLimit-Remaining"] == "9"
    assert responses[7]["RateLimit-Warning"] == "80% of the per-minute limit used"
    assert responses[11].status_code == 429
    assert ratelimit.FALLBACK_USED._value.get() - before == 12
