"""Exact percentiles from the duration histogram (ADR 0053): on random data of many shapes the answer equals
`percentile_cont` over every row, bit for bit; the histogram follows inserts, updates, deletes and compaction;
a histogram that disagrees with the rows (triggers bypassed) falls back to sorting every row. The /ops/ funnel
and chart summed from the hourly rollup equal their direct counts."""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection
from django.db.models import Count, Sum

from apps.employers.tests.factories import EmployerFactory
from apps.endorsements import analytics
from apps.endorsements.analytics import (
    EmployerScope,
    analytics_range_parse,
    endorsement_analytics,
    endorsement_funnel,
    endorsements_per_hour,
)
from apps.endorsements.models import Endorsement, EndorsementDurationRollup, EndorsementStatus
from apps.endorsements.rollup import rollup_compact, rollup_duration_percentiles
from apps.endorsements.tests.factories import PolicyFactory
from apps.ops.tests.conftest import crafted_row, insert_received
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db(transaction=True)
# The histogram is PostgreSQL's (SQLite sorts in Python); the funnel/chart test runs on both.
needs_postgres = pytest.mark.usefixtures("require_postgres")
IST = ZoneInfo("Asia/Kolkata")
START = datetime(2026, 10, 31, 20, 0, tzinfo=IST)
FRACTIONS = (0.0, 0.01, 0.25, 0.5, 0.9, 0.95, 0.99, 1.0)


def _duration(rng: random.Random, shape: str) -> float:
    """Seconds from receipt to ACTIVE, drawn from one of several shapes (the histogram must not care)."""
    if shape == "pipeline":  # seconds to hours, with a day-plus tail (the exact EXTRACT branch)
        return rng.uniform(1, 9000) if rng.random() < 0.85 else rng.uniform(86000, 3 * 86400)
    if shape == "identical":  # every row in one bucket: the worst case reads them all
        return 42.5
    if shape == "ties":  # few distinct values, many equal ranks across bucket edges
        return rng.choice([0.0005, 0.001, 1, 1.0312, 60, 60.000001, 3600])
    if shape == "heavy-tail":
        return min(rng.paretovariate(0.7), 300 * 86400)
    if shape == "sub-second-and-negative":  # clock skew: activation recorded before receipt
        return rng.uniform(-5, 1)
    raise AssertionError(shape)


def make_rows(rng: random.Random, policies: list, n: int, shape: str, *, days: float = 3.5) -> list[int]:
    """`n` endorsements received over `days` from START, most ACTIVE with a duration of `shape`; their ids."""
    rows, received = [], []
    for i in range(n):
        policy = rng.choice(policies)
        at = START + timedelta(seconds=rng.uniform(0, days * 86400))
        active = rng.random() < 0.8
        activated = at + timedelta(seconds=_duration(rng, shape)) if active and rng.random() < 0.97 else None
        status = "ACTIVE" if active else rng.choice(["RECEIVED", "SENT", "FAILED"])
        rows.append(crafted_row(policy, n=f"P-{shape}-{i}", received=at, status=status, activated_at=activated))
        received.append(at)
    return [row.pk for row in insert_received(rows, received)]


def pg_percentile_cont(scope: EmployerScope, start: datetime, end: datetime) -> tuple[int, tuple[float | None, ...]]:
    """(count, PostgreSQL's own `percentile_cont(FRACTIONS)`) over every ACTIVE row of the range: the truth the
    histogram's answer must equal, computed by the database, not by a copy of the interpolation under test."""
    rows = Endorsement.objects.filter(status="ACTIVE", activated_at__isnull=False, created_at__gte=start)
    rows = rows.filter(created_at__lt=end)
    if scope.partner_id is not None:
        rows = rows.filter(employer__partner_id=scope.partner_id)
    ids = list(rows.values_list("id", flat=True))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*), percentile_cont(%s::float8[]) WITHIN GROUP"
            " (ORDER BY endorsement_active_seconds(created_at, activated_at))"
            " FROM endorsements_endorsement WHERE id = ANY(%s)",
            [list(FRACTIONS), ids],
        )
        count, values = cursor.fetchone()
    return count, tuple(values) if values is not None else tuple(None for _ in FRACTIONS)


def assert_exact_everywhere(partners: list) -> int:
    """For every scope and several day ranges, the histogram's answer == PostgreSQL's `percentile_cont` over every
    row, at every fraction, bit for bit. Returns the ranges compared with rows in them."""
    compared = 0
    for scope in [EmployerScope(partner_id=p.pk) for p in partners] + [EmployerScope()]:
        for from_raw, to_raw in [
            ("2026-10-31", "2026-11-05"),
            ("2026-11-01", "2026-11-01"),
            ("2026-11-02", "2026-11-03"),
            ("2026-11-20", "2026-11-21"),  # nothing received: count 0, no percentile
        ]:
            rng = analytics_range_parse(from_raw=from_raw, to_raw=to_raw, now=datetime(2026, 12, 1, tzinfo=IST))
            found = rollup_duration_percentiles(
                partner_id=scope.partner_id,
                from_day=rng.from_date,
                to_day=rng.to_date,
                start=rng.start,
                end=rng.end,
                fractions=FRACTIONS,
            )
            count, values = pg_percentile_cont(scope, rng.start, rng.end)
            assert found is not None, "the histogram disagreed with the rows"
            assert (found.count, found.values) == (count, values)
            if count:
                median, p95, activated = analytics._pg_percentiles(rng, scope)  # the fallback: every row sorted
                assert (found.values[3], found.values[5], found.count) == (median, p95, activated)
                compared += 1
    return compared


@pytest.mark.parametrize(
    ("shape", "seed"),
    [
        ("pipeline", 1),
        ("pipeline", 2),
        ("identical", 3),
        ("ties", 4),
        ("heavy-tail", 5),
        ("sub-second-and-negative", 6),
    ],
)
@pytest.mark.postgres
@needs_postgres
def test_histogram_percentiles_equal_percentile_cont_over_every_row(shape, seed):
    rng = random.Random(seed)
    partners = [PartnerFactory(), PartnerFactory()]
    policies = [PolicyFactory(employer=EmployerFactory(partner=p)) for p in partners for _ in range(2)]
    make_rows(rng, policies, 700, shape)
    assert EndorsementDurationRollup.objects.filter(compacted=False).exists()
    assert assert_exact_everywhere(partners) == 9


@pytest.mark.postgres
@needs_postgres
def test_histogram_follows_updates_deletes_and_compaction():
    rng = random.Random(53)
    partners = [PartnerFactory(), PartnerFactory()]
    policies = [PolicyFactory(employer=EmployerFactory(partner=p)) for p in partners for _ in range(3)]
    pks = make_rows(rng, policies, 600, "pipeline")
    assert_exact_everywhere(partners)

    # Activations as the pipeline makes them (one row, then bulk), a changed activation time, leaving ACTIVE,
    # a delete: each statement's deltas keep the histogram equal to the rows.
    for pk in rng.sample(pks, 30):
        Endorsement.objects.filter(pk=pk).update(status="ACTIVE", activated_at=datetime(2026, 11, 4, 1, tzinfo=IST))
    Endorsement.objects.filter(pk__in=rng.sample(pks, 60)).update(activated_at=datetime(2026, 11, 5, 2, tzinfo=IST))
    Endorsement.objects.filter(pk__in=rng.sample(pks, 60)).update(status="FAILED")
    Endorsement.objects.filter(pk__in=rng.sample(pks, 25)).delete()
    assert_exact_everywhere(partners)

    deleted, folded = rollup_compact()
    assert deleted > folded > 0
    assert not EndorsementDurationRollup.objects.filter(compacted=False).exists()
    keys = EndorsementDurationRollup.objects.values("partner_id", "day", "bucket")
    assert keys.count() == keys.distinct().count()  # one row per key
    assert not EndorsementDurationRollup.objects.filter(n=0).exists()
    assert_exact_everywhere(partners)

    Endorsement.objects.filter(pk__in=rng.sample(sorted(Endorsement.objects.values_list("pk", flat=True)), 50)).update(
        status="CANCELLED"
    )
    assert_exact_everywhere(partners)


@pytest.mark.postgres
@needs_postgres
def test_buckets_are_non_decreasing_in_the_duration():
    """Exactness rests on this: a longer duration never lands in a lower bucket (checked across bucket edges,
    sub-millisecond, negative and day-plus durations)."""
    received = datetime(2026, 11, 1, 10, 0, tzinfo=IST)
    seconds = sorted(
        [-86400 * 2, -3, -0.5, 0, 0.000999, 0.001, 0.0010001, 0.5, 1, 59.999999, 60, 3599.5, 86399.999999]
        + [86400, 86400.000001, 7 * 86400, 400 * 86400]
        + [random.Random(7).uniform(0, 10_000) for _ in range(300)]
    )
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT endorsement_duration_bucket(%s, a), endorsement_active_seconds(%s, a)"
            " FROM unnest(%s::timestamptz[]) WITH ORDINALITY t(a, i) ORDER BY i",
            [received, received, [received + timedelta(seconds=s) for s in seconds]],
        )
        rows = cursor.fetchall()
    buckets = [b for b, _ in rows]
    assert buckets == sorted(buckets)
    assert [d for _, d in rows] == sorted(d for _, d in rows)
    assert buckets[0] == 0
    assert buckets[-1] > buckets[len(buckets) // 2] > 0


@pytest.mark.postgres
@needs_postgres
def test_a_histogram_that_disagrees_with_the_rows_falls_back_to_sorting_every_row(caplog):
    rng = random.Random(8)
    partner = PartnerFactory()
    policies = [PolicyFactory(employer=EmployerFactory(partner=partner))]
    make_rows(rng, policies, 200, "pipeline")
    # Activation times rewritten with the rollup triggers off (as a restore with session_replication_role =
    # replica would): every bucket of the histogram now disagrees with its rows.
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE endorsements_endorsement DISABLE TRIGGER endorsement_rollup_update")
    try:
        Endorsement.objects.filter(status="ACTIVE", activated_at__isnull=False).update(
            activated_at=datetime(2026, 11, 9, tzinfo=IST)
        )
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE endorsements_endorsement ENABLE TRIGGER endorsement_rollup_update")
    rng_ = analytics_range_parse(from_raw="2026-10-31", to_raw="2026-11-05", now=datetime(2026, 12, 1, tzinfo=IST))
    scope = EmployerScope(partner_id=partner.pk)
    found = rollup_duration_percentiles(
        partner_id=partner.pk,
        from_day=rng_.from_date,
        to_day=rng_.to_date,
        start=rng_.start,
        end=rng_.end,
        fractions=(0.5, 0.95),
    )
    assert found is None
    count, values = pg_percentile_cont(scope, rng_.start, rng_.end)
    answer = endorsement_analytics(scope=scope, rng=rng_)["received_to_active_seconds"]
    assert count > 0
    assert answer == {"median": round(values[3], 3), "p95": round(values[5], 3), "count": count}
    assert "analytics.duration_histogram_mismatch" in caplog.text


def test_ops_funnel_and_chart_from_the_rollup_equal_the_rows(monkeypatch):
    rng = random.Random(11)
    partner = PartnerFactory()
    policies = [PolicyFactory(employer=EmployerFactory(partner=partner)) for _ in range(2)]
    pks = make_rows(rng, policies, 500, "pipeline", days=2)
    statuses = list(EndorsementStatus.values)
    for pk in rng.sample(pks, 150):
        Endorsement.objects.filter(pk=pk).update(status=rng.choice(statuses))
    compared = 0
    for now in [
        START + timedelta(hours=30, minutes=17, seconds=3),  # neither edge on an hour
        START + timedelta(hours=36),  # on the hour: no leading partial hour
        START + timedelta(hours=47, minutes=59, microseconds=1),
    ]:
        since = now - timedelta(hours=24)
        direct = dict(
            Endorsement.objects.filter(created_at__gte=since).order_by().values_list("status").annotate(n=Count("*"))
        )
        assert endorsement_funnel(since=since, now=now) == {s: direct.get(s, 0) for s in statuses}
        from_rollup = endorsements_per_hour(now=now)
        with monkeypatch.context() as m:
            m.setattr(analytics, "rollup_available", lambda: False)
            assert from_rollup == endorsements_per_hour(now=now)
        assert sum(h["count"] for h in from_rollup) > 0
        compared += sum(direct.values()) > 0
    assert compared == 3


@pytest.mark.postgres
@needs_postgres
def test_day_of_the_histogram_is_the_ist_date_of_receipt():
    partner = PartnerFactory()
    policy = PolicyFactory(employer=EmployerFactory(partner=partner))
    rng = random.Random(3)
    make_rows(rng, [policy], 50, "pipeline", days=1)
    # The insert counted them on today's date (auto_now_add), the update moved them: today's deltas net to 0.
    net = dict(EndorsementDurationRollup.objects.order_by().values_list("day").annotate(n=Sum("n")))
    assert {day for day, n in net.items() if n} == {date(2026, 10, 31), date(2026, 11, 1)}
    received = Endorsement.objects.filter(status="ACTIVE", activated_at__isnull=False).values_list("created_at")
    assert sum(net.values()) == received.count()
    assert (
        sum(n for day, n in net.items() if day == date(2026, 10, 31))
        == received.filter(created_at__lt=datetime(2026, 11, 1, tzinfo=IST)).count()
    )
