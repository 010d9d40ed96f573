"""GET /api/v1/analytics/endorsements: every figure exact on a crafted data set, tenancy, 422s, caching."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import time_machine
from django.test import override_settings

from apps.employers.tests.factories import EmployerFactory
from apps.endorsements.analytics import percentile_cont
from apps.endorsements.tests.factories import PolicyFactory
from apps.ops.tests.conftest import make_endorsement as endorsement
from apps.partners.models import Scope
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db
IST = ZoneInfo("Asia/Kolkata")
URL = "/api/v1/analytics/endorsements"


def ist(*args: int) -> datetime:
    return datetime(*args, tzinfo=IST)


@pytest.fixture
def crafted():
    """Employers A and B of one partner, C of another; rows on both edges of 1–2 Nov 2026 (IST)."""
    partner = PartnerFactory()
    a, b = EmployerFactory(partner=partner), EmployerFactory(partner=partner)
    c = EmployerFactory()
    pa, pb, pc = PolicyFactory(employer=a), PolicyFactory(employer=b), PolicyFactory(employer=c)
    endorsement(
        pa, received=ist(2026, 11, 1, 0, 0), status="ACTIVE", premium=100000, direction="debit", active_after=60
    )
    endorsement(
        pa, received=ist(2026, 11, 1, 10, 15), status="ACTIVE", premium=50050, direction="debit", active_after=120
    )
    endorsement(
        pa,
        received=ist(2026, 11, 2, 23, 59, 59),
        status="ACTIVE",
        type="deletion",
        premium=2500,
        direction="credit",
        active_after=300,
    )
    endorsement(
        pa,
        received=ist(2026, 11, 2, 12, 0),
        status="REJECTED",
        premium=1000,
        direction="debit",
        rejection_class="age_limit",
    )
    endorsement(pa, received=ist(2026, 11, 2, 12, 30), status="REJECTED", rejection_class="age_limit")
    endorsement(pa, received=ist(2026, 11, 2, 13, 0), status="FAILED", type="correction", rejection_class="transient")
    endorsement(pa, received=ist(2026, 11, 2, 14, 0), status="CANCELLED", premium=700, direction="debit")
    endorsement(pa, received=ist(2026, 11, 2, 15, 0), status="SENT", premium=900, direction="debit")
    # Outside the range by a second on each side.
    endorsement(
        pa, received=ist(2026, 10, 31, 23, 59, 59), status="ACTIVE", premium=1, direction="debit", active_after=5
    )
    endorsement(pa, received=ist(2026, 11, 3, 0, 0), status="ACTIVE", premium=1, direction="debit", active_after=5)
    endorsement(
        pb, received=ist(2026, 11, 1, 5, 0), status="ACTIVE", premium=7000, direction="debit", active_after=1000
    )
    endorsement(pc, received=ist(2026, 11, 1, 5, 0), status="FAILED", rejection_class="other_partner")
    return {"partner": partner, "a": a, "b": b, "c": c}


def zero_statuses(**counts: int) -> dict[str, int]:
    base = dict.fromkeys(
        [
            "RECEIVED",
            "VALIDATED",
            "ON_HOLD_FUNDS",
            "ON_HOLD_REVIEW",
            "FUNDS_LOCKED",
            "SENT",
            "CONFIRMED",
            "ACTIVE",
            "REJECTED",
            "FAILED",
            "CANCELLED",
        ],
        0,
    )
    return {**base, **counts}


def expected_hourly(counts: dict[int, int]) -> list[dict]:
    return [{"hour": ist(2026, 11, 2, h).isoformat(), "count": counts.get(h, 0)} for h in range(24)]


def test_one_employer_every_figure_exact(crafted, make_key):
    client = make_key(partner=crafted["partner"], scopes=[Scope.ANALYTICS_READ], employers=[crafted["a"]])
    response = client.get(URL, {"employer": crafted["a"].pk, "from": "2026-11-01", "to": "2026-11-02"})
    assert response.status_code == 200, response.content
    assert response.json() == {
        "employer": crafted["a"].pk,
        "from": "2026-11-01",
        "to": "2026-11-02",
        "timezone": "Asia/Kolkata",
        "total": 8,
        "by_status": zero_statuses(ACTIVE=3, REJECTED=2, FAILED=1, CANCELLED=1, SENT=1),
        "by_type": {"addition": 6, "deletion": 1, "correction": 1},
        "terminal": 7,
        "failure_ratio": 0.4286,
        # [60, 120, 300]: median 120; p95 at rank 1.9 → 120 + 0.9 × 180 = 282.
        "received_to_active_seconds": {"median": 120.0, "p95": 282.0, "count": 3},
        "premium": {"currency": "INR", "debited": "1500.50", "credited": "25.00"},
        "top_rejection_classes": [{"class": "age_limit", "count": 2}, {"class": "transient", "count": 1}],
        # `to` is past: the trend is the 24 IST hours before midnight after 2 Nov.
        "hourly": expected_hourly({12: 2, 13: 1, 14: 1, 15: 1, 23: 1}),
    }


def test_all_employers_of_the_key_exact_and_no_other_partner(crafted, make_key):
    client = make_key(partner=crafted["partner"], scopes=[Scope.ANALYTICS_READ], all_employers=True)
    body = client.get(URL, {"from": "2026-11-01", "to": "2026-11-02"}).json()
    assert body["employer"] is None
    assert body["total"] == 9
    assert body["by_status"] == zero_statuses(ACTIVE=4, REJECTED=2, FAILED=1, CANCELLED=1, SENT=1)
    assert body["failure_ratio"] == round(3 / 8, 4)
    # [60, 120, 300, 1000]: median 210; p95 at rank 2.85 → 300 + 0.85 × 700 = 895.
    assert body["received_to_active_seconds"] == {"median": 210.0, "p95": 895.0, "count": 4}
    assert body["premium"] == {"currency": "INR", "debited": "1570.50", "credited": "25.00"}
    assert body["top_rejection_classes"] == [{"class": "age_limit", "count": 2}, {"class": "transient", "count": 1}]


def test_a_key_bound_to_one_employer_sees_only_it(crafted, make_key):
    client = make_key(partner=crafted["partner"], scopes=[Scope.ANALYTICS_READ], employers=[crafted["a"]])
    assert client.get(URL, {"employer": crafted["b"].pk}).status_code == 404
    assert client.get(URL, {"employer": crafted["c"].pk}).status_code == 404
    body = client.get(URL, {"from": "2026-11-01", "to": "2026-11-02"}).json()
    assert body["total"] == 8  # A only, although B belongs to the same partner


def test_without_the_analytics_scope_403(crafted, make_key):
    client = make_key(partner=crafted["partner"], scopes=[Scope.ENDORSEMENTS_READ], all_employers=True)
    assert client.get(URL).status_code == 403


def test_no_rows_gives_zeros_and_nulls(crafted, make_key):
    client = make_key(partner=crafted["partner"], scopes=[Scope.ANALYTICS_READ], all_employers=True)
    body = client.get(URL, {"from": "2025-01-01", "to": "2025-01-01"}).json()
    assert body["total"] == 0
    assert body["failure_ratio"] is None
    assert body["received_to_active_seconds"] == {"median": None, "p95": None, "count": 0}
    assert body["premium"] == {"currency": "INR", "debited": "0.00", "credited": "0.00"}
    assert [h["count"] for h in body["hourly"]] == [0] * 24


@time_machine.travel(datetime(2026, 11, 2, 15, 40, tzinfo=IST), tick=False)
def test_defaults_and_the_trend_of_the_24_hours_before_now(crafted, make_key):
    client = make_key(partner=crafted["partner"], scopes=[Scope.ANALYTICS_READ], employers=[crafted["a"]])
    body = client.get(URL).json()
    assert (body["from"], body["to"]) == ("2026-10-04", "2026-11-02")  # 30 days ending today (IST)
    hours = body["hourly"]
    assert len(hours) == 24
    assert hours[0]["hour"] == ist(2026, 11, 1, 16).isoformat()
    assert hours[-1]["hour"] == ist(2026, 11, 2, 15).isoformat()
    # 12:00, 12:30, 13:00, 14:00, 15:00 today; 10:15 yesterday is more than 24 h ago.
    assert {h["hour"]: h["count"] for h in hours if h["count"]} == {
        ist(2026, 11, 2, 12).isoformat(): 2,
        ist(2026, 11, 2, 13).isoformat(): 1,
        ist(2026, 11, 2, 14).isoformat(): 1,
        ist(2026, 11, 2, 15).isoformat(): 1,
    }


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-11-05", "to": "2026-11-01"}, "from"),
        ({"from": "2025-01-01", "to": "2026-01-02"}, "to"),  # 367 days
        ({"from": "2026-02-30"}, "from"),
        ({"to": "2026-13-01"}, "to"),
        ({"from": "yesterday"}, "from"),
        ({"to": "20261101"}, "to"),
        ({"from": "2026-11-01T00:00:00"}, "from"),
        ({"employer": "abc"}, "employer"),
        ({"to": "9999-12-31"}, "to"),
        ({"to": "1331-05-19"}, "to"),
        ({"employer": "0"}, "employer"),
        ({"employer": str(2**63)}, "employer"),
    ],
)
def test_bad_ranges_are_422_naming_the_field(crafted, make_key, params, field):
    client = make_key(partner=crafted["partner"], scopes=[Scope.ANALYTICS_READ], all_employers=True)
    response = client.get(URL, params)
    assert response.status_code == 422, response.content
    assert response["Content-Type"].startswith("application/problem+json")
    assert [e["pointer"] for e in response.json()["errors"]] == [f"/{field}"]


def test_366_days_is_allowed(crafted, make_key):
    client = make_key(partner=crafted["partner"], scopes=[Scope.ANALYTICS_READ], all_employers=True)
    assert client.get(URL, {"from": "2025-01-01", "to": "2026-01-01"}).status_code == 200


@override_settings(ANALYTICS_CACHE_SECONDS=15)
def test_answers_are_cached_per_key_scope(crafted, make_key):
    one = make_key(partner=crafted["partner"], scopes=[Scope.ANALYTICS_READ], employers=[crafted["a"]])
    every = make_key(partner=crafted["partner"], scopes=[Scope.ANALYTICS_READ], all_employers=True)
    params = {"from": "2026-11-01", "to": "2026-11-02"}
    first = one.get(URL, params).json()
    endorsement(PolicyFactory(employer=crafted["a"]), received=ist(2026, 11, 1, 9), status="RECEIVED")
    assert one.get(URL, params).json() == first  # served from the cache within its TTL
    assert every.get(URL, params).json()["total"] == 10  # another scope is another entry: computed fresh


def test_percentile_cont_matches_postgresql_interpolation():
    assert percentile_cont([], 0.5) is None
    assert percentile_cont([7.0], 0.95) == 7.0
    assert percentile_cont([1.0, 2.0, 3.0, 4.0], 0.5) == 2.5
    assert percentile_cont([60.0, 120.0, 300.0], 0.95) == pytest.approx(282.0)


def test_with_the_cache_down_the_figures_are_computed_not_a_500(crafted, make_key):
    import socket

    with socket.socket() as s:  # a port nothing listens on: the cache's Redis is down
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    client = make_key(partner=crafted["partner"], scopes=[Scope.ANALYTICS_READ], employers=[crafted["a"]])
    params = {"employer": crafted["a"].pk, "from": "2026-11-01", "to": "2026-11-02"}
    expected = client.get(URL, params).json()
    down = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{closed}/0",
        }
    }

    with override_settings(CACHES=down):
        response = client.get(URL, params)

    assert response.status_code == 200, response.content
    assert response.json() == expected
