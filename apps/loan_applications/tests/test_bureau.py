"""The simulated credit bureau (SPEC §9) and the breaker/retry wrapper around any bureau."""

from __future__ import annotations

import uuid
from datetime import date

import pybreaker
import pytest
from hypothesis import given
from hypothesis import strategies as st

from apps.loan_applications.bureau import (
    BureauError,
    BureauReport,
    BureauRequest,
    BureauUnavailable,
    SimulatedBureau,
    clamp_score,
    id_variation,
    soft_pull_with_retries,
)

ZERO_VARIATION_ID = next(u for u in (uuid.UUID(int=i) for i in range(1000)) if id_variation(u) == 0)


def request(*, pan="PQRST1234U", income_rupees=50_000, loan_type="AUTO", application_id=ZERO_VARIATION_ID):
    return BureauRequest(
        application_id=application_id,
        pan=pan,
        first_name="A",
        last_name="B",
        date_of_birth=date(1990, 1, 1),
        monthly_income=income_rupees * 100,
        loan_type=loan_type,
    )


@pytest.mark.parametrize(
    ("pan", "income", "loan_type", "expected"),
    [
        ("ABCDE1234F", 75_000, "PERSONAL", 790),
        ("ABCDE1234F", 10_000, "HOME", 790),
        ("FGHIJ5678K", 75_000, "PERSONAL", 610),
        ("FGHIJ5678K", 200_000, "HOME", 610),
    ],
)
def test_fixed_test_identities_score_exactly(pan, income, loan_type, expected):
    for application_id in (ZERO_VARIATION_ID, uuid.uuid4(), uuid.uuid4()):
        report = SimulatedBureau().soft_pull(
            request(pan=pan, income_rupees=income, loan_type=loan_type, application_id=application_id)
        )
        assert report.score == expected


@pytest.mark.parametrize(
    ("income", "loan_type", "expected"),
    [
        (50_000, "AUTO", 650),  # base
        (75_000, "AUTO", 650),  # exactly 75,000 is not "> 75,000"
        (75_000.01, "AUTO", 690),  # +40
        (200_000, "AUTO", 690),
        (30_000, "AUTO", 650),  # exactly 30,000 is not "< 30,000"
        (29_999.99, "AUTO", 630),  # −20
        (50_000, "PERSONAL", 640),  # −10
        (50_000, "HOME", 660),  # +10
        (100_000, "HOME", 700),
        (10_000, "PERSONAL", 620),
    ],
)
def test_each_adjustment(income, loan_type, expected):
    req = BureauRequest(
        application_id=ZERO_VARIATION_ID,
        pan="PQRST1234U",
        first_name="A",
        last_name="B",
        date_of_birth=date(1990, 1, 1),
        monthly_income=round(income * 100),
        loan_type=loan_type,
    )
    assert SimulatedBureau().soft_pull(req).score == expected


def test_variation_is_added_to_the_score():
    application_id = next(u for u in (uuid.UUID(int=i) for i in range(1000)) if id_variation(u) == -5)
    assert SimulatedBureau().soft_pull(request(application_id=application_id)).score == 645


@pytest.mark.parametrize(
    ("base", "income", "loan_type", "expected", "clamped_from"),
    [
        (1_000, 100_000, "HOME", 900, 1_050),  # upper clamp
        (900, 50_000, "AUTO", 900, None),  # exactly 900 stays
        (250, 10_000, "PERSONAL", 300, 220),  # lower clamp
        (300, 50_000, "AUTO", 300, None),  # exactly 300 stays
    ],
)
def test_score_is_clamped_to_300_900(base, income, loan_type, expected, clamped_from):
    report = SimulatedBureau(base_score=base).soft_pull(request(income_rupees=income, loan_type=loan_type))
    assert report.score == expected
    assert report.factors.get("clamped_from") == clamped_from


@pytest.mark.parametrize(("raw", "expected"), [(299, 300), (300, 300), (650, 650), (900, 900), (901, 900)])
def test_clamp_score(raw, expected):
    assert clamp_score(raw) == expected


@given(st.uuids())
def test_variation_is_deterministic_per_id_and_within_five(application_id):
    variation = id_variation(application_id)
    assert -5 <= variation <= 5
    assert id_variation(uuid.UUID(str(application_id))) == variation
    report = SimulatedBureau().soft_pull(request(application_id=application_id))
    assert report.score == 650 + variation
    assert report.factors["variation"] == variation


def test_variation_takes_every_value_from_minus_five_to_five():
    assert {id_variation(uuid.UUID(int=i)) for i in range(500)} == set(range(-5, 6))


def test_bureau_request_repr_hides_the_pan():
    assert "PQRST1234U" not in repr(request())


class FlakyBureau:
    name = "flaky"

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def soft_pull(self, req):
        self.calls += 1
        if self.calls <= self.failures:
            raise BureauError("timeout")
        return BureauReport(bureau=self.name, score=700)


def test_transient_bureau_failures_are_retried_with_backoff():
    bureau, sleeps = FlakyBureau(failures=2), []
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)

    report = soft_pull_with_retries(request(), bureau=bureau, breaker=breaker, attempts=3, sleep=sleeps.append)

    assert report.score == 700
    assert bureau.calls == 3
    assert len(sleeps) == 2
    assert 0 <= sleeps[0] <= 0.05
    assert 0 <= sleeps[1] <= 0.1


def test_retries_are_bounded_then_bureau_unavailable():
    bureau = FlakyBureau(failures=100)
    breaker = pybreaker.CircuitBreaker(fail_max=50, reset_timeout=30)

    with pytest.raises(BureauUnavailable):
        soft_pull_with_retries(request(), bureau=bureau, breaker=breaker, attempts=3, sleep=lambda s: None)

    assert bureau.calls == 3


def test_open_circuit_stops_calling_the_bureau():
    bureau = FlakyBureau(failures=100)
    breaker = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=60)
    with pytest.raises(BureauUnavailable):
        soft_pull_with_retries(request(), bureau=bureau, breaker=breaker, attempts=5, sleep=lambda s: None)
    assert bureau.calls == 3  # the third failure opened the circuit
    assert breaker.current_state == pybreaker.STATE_OPEN

    with pytest.raises(BureauUnavailable) as excinfo:
        soft_pull_with_retries(request(), bureau=bureau, breaker=breaker, attempts=5, sleep=lambda s: None)

    assert bureau.calls == 3
    assert excinfo.value.retry_after == 60


def test_programming_errors_do_not_open_the_circuit():
    class Broken:
        name = "broken"

        def soft_pull(self, req):
            raise KeyError("bug")

    breaker = pybreaker.CircuitBreaker(fail_max=1, reset_timeout=60, exclude=[lambda e: not isinstance(e, BureauError)])
    for _ in range(3):
        with pytest.raises(KeyError):
            soft_pull_with_retries(request(), bureau=Broken(), breaker=breaker, sleep=lambda s: None)
    assert breaker.current_state == pybreaker.STATE_CLOSED


@pytest.mark.redis
def test_breaker_state_is_shared_through_redis(settings, monkeypatch):
    from django.conf import settings as django_settings

    if not django_settings.REDIS_URL:
        pytest.skip("needs REDIS_URL")
    import redis

    from apps.loan_applications import bureau as bureau_module

    client = redis.Redis.from_url(django_settings.REDIS_URL)
    namespace = f"keel-test:breaker:{uuid.uuid4()}"
    try:
        one = pybreaker.CircuitBreaker(
            fail_max=2, reset_timeout=60, state_storage=pybreaker.CircuitRedisStorage("closed", client, namespace)
        )
        two = pybreaker.CircuitBreaker(
            fail_max=2, reset_timeout=60, state_storage=pybreaker.CircuitRedisStorage("closed", client, namespace)
        )
        with pytest.raises(BureauUnavailable):
            soft_pull_with_retries(request(), bureau=FlakyBureau(100), breaker=one, attempts=3, sleep=lambda s: None)
        other = FlakyBureau(0)
        with pytest.raises(BureauUnavailable):  # a second worker sees the circuit open
            soft_pull_with_retries(request(), bureau=other, breaker=two, sleep=lambda s: None)
        assert other.calls == 0
    finally:
        for key in client.scan_iter(f"{namespace}*"):
            client.delete(key)
    # The production factory builds Redis storage when REDIS_URL is set.
    monkeypatch.undo()
    bureau_module.bureau_breaker.cache_clear()
    assert isinstance(bureau_module.bureau_breaker()._state_storage, pybreaker.CircuitRedisStorage)
    bureau_module.bureau_breaker.cache_clear()
