"""The hourly rollup (ADR 0047) gives the same analytics as reading the endorsement rows, on random data, after
bulk inserts, updates, deletes and compaction; a rolled-back change leaves it as it was."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.db import connection, transaction
from django.db.models import Count, Sum

from apps.employers.tests.factories import EmployerFactory
from apps.endorsements import analytics
from apps.endorsements.analytics import EmployerScope, analytics_range_parse, endorsement_analytics, percentile_cont
from apps.endorsements.models import Endorsement, EndorsementDurationRollup, EndorsementRollup, EndorsementStatus
from apps.endorsements.rollup import rollup_compact, rollup_status_type_counts
from apps.endorsements.tests.factories import PolicyFactory
from apps.ops.tests.conftest import crafted_row, insert_received
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db(transaction=True)
IST = ZoneInfo("Asia/Kolkata")
STATUSES = list(EndorsementStatus.values)
CLASSES = ["age_limit", "Age_limit", "data_mismatch", "transient", "policy-lapsed", "zeta"]
START = datetime(2026, 10, 31, 20, 0, tzinfo=IST)


def random_rows(rng: random.Random, policies: list, n: int) -> list[Endorsement]:
    rows = []
    for i in range(n):
        policy = rng.choice(policies)
        status = rng.choice(STATUSES)
        kind = rng.choice(["addition", "deletion", "correction"])
        direction = rng.choice(["debit", "credit", "none"])
        received = START + timedelta(seconds=rng.uniform(0, 3.5 * 86400))
        rows.append(
            crafted_row(
                policy,
                n=f"R-{i}",
                received=received,
                status=status,
                type=kind,
                premium_amount=0 if direction == "none" else rng.randint(1, 5_000_00),
                premium_direction=direction,
                rejection_class=rng.choice(CLASSES) if status in ("FAILED", "REJECTED") and rng.random() < 0.9 else "",
                # Mostly under a day (date_part), some over (the exact EXTRACT branch of the duration).
                activated_at=received
                + timedelta(seconds=rng.uniform(1, 9000) if rng.random() < 0.8 else rng.uniform(86000, 3 * 86400))
                if status == "ACTIVE" and rng.random() < 0.95
                else None,
                created_at=received,
            )
        )
    return rows


def both_ways(monkeypatch, scope: EmployerScope, from_raw: str, to_raw: str, now: datetime) -> tuple[dict, dict]:
    rng = analytics_range_parse(from_raw=from_raw, to_raw=to_raw, now=now)
    from_rollup = endorsement_analytics(scope=scope, rng=rng)
    with monkeypatch.context() as m:
        m.setattr(analytics, "rollup_available", lambda: False)
        direct = endorsement_analytics(scope=scope, rng=rng)
    return from_rollup, direct


def assert_same_everywhere(monkeypatch, partners) -> int:
    """Every scope × a few ranges and trend ends: rollup answer == direct answer. Returns answers compared."""
    compared = 0
    scopes = [EmployerScope(partner_id=p.pk) for p in partners] + [EmployerScope()]
    cases = [
        ("2026-11-01", "2026-11-03", datetime(2026, 11, 2, 17, 42, 13, tzinfo=IST)),  # trend ends mid-hour
        ("2026-11-01", "2026-11-02", datetime(2026, 11, 20, 9, 0, tzinfo=IST)),  # `to` past: whole hours
        ("2026-10-31", "2026-11-01", datetime(2026, 11, 1, 0, 30, 0, 1, tzinfo=IST)),
        ("2026-11-02", "2026-11-02", datetime(2026, 11, 3, 23, 59, 59, tzinfo=IST)),
    ]
    for scope in scopes:
        for from_raw, to_raw, now in cases:
            from_rollup, direct = both_ways(monkeypatch, scope, from_raw, to_raw, now)
            assert from_rollup == direct, (scope, from_raw, to_raw, now)
            compared += 1
    return compared


def assert_percentiles_exact() -> None:
    """PostgreSQL's percentiles equal percentile_cont over the durations computed exactly in Python."""
    rng = analytics_range_parse(from_raw="2026-10-31", to_raw="2026-11-04", now=datetime(2026, 11, 5, tzinfo=IST))
    rows = Endorsement.objects.filter(
        status="ACTIVE", activated_at__isnull=False, created_at__gte=rng.start, created_at__lt=rng.end
    ).values_list("created_at", "activated_at")
    durations = sorted((active - received).total_seconds() for received, active in rows)
    assert len(durations) > 50
    assert analytics._pg_percentiles(rng, EmployerScope()) == (
        percentile_cont(durations, 0.5),
        percentile_cont(durations, 0.95),
        len(durations),
    )


def assert_gauge_matches() -> None:
    direct = {
        (s, t): n for s, t, n in Endorsement.objects.order_by().values_list("status", "type").annotate(n=Count("*"))
    }
    assert rollup_status_type_counts() == direct


def test_rollup_answers_equal_direct_computation_on_random_data(monkeypatch):
    assert connection.vendor == "postgresql"  # the rollup is PostgreSQL's; SQLite reads the rows (ADR 0047)
    rng = random.Random(47)
    partners = [PartnerFactory(), PartnerFactory()]
    policies = [PolicyFactory(employer=EmployerFactory(partner=p)) for p in partners for _ in range(3)]
    rows = random_rows(rng, policies, 600)
    made = insert_received(rows, [row.created_at for row in rows])
    by_pk = {e.pk: e for e in made}
    assert EndorsementRollup.objects.filter(compacted=False).exists()
    assert assert_same_everywhere(monkeypatch, partners) == 12
    assert_gauge_matches()
    assert_percentiles_exact()

    # Transitions as the pipeline makes them (one row, then bulk), a delete, a premium change.
    pks = sorted(by_pk)
    for pk in rng.sample(pks, 40):
        Endorsement.objects.filter(pk=pk).update(status=rng.choice(STATUSES), rejection_class=rng.choice(CLASSES))
    chosen = rng.sample(pks, 120)
    Endorsement.objects.filter(pk__in=chosen[:60]).update(
        status="ACTIVE", activated_at=datetime(2026, 11, 4, 1, 0, tzinfo=IST)
    )
    Endorsement.objects.filter(pk__in=chosen[60:]).update(status="FAILED", rejection_class="transient")
    Endorsement.objects.filter(pk__in=rng.sample(pks, 25)).delete()
    Endorsement.objects.filter(premium_direction="debit", pk__in=pks[:100]).update(premium_amount=123_45)
    assert_same_everywhere(monkeypatch, partners)
    assert_gauge_matches()

    deleted, folded = rollup_compact()
    assert deleted > folded > 0
    assert not EndorsementRollup.objects.filter(compacted=False).exists()
    keys = EndorsementRollup.objects.values("partner_id", "hour", "status", "type", "rejection_class")
    histogram_keys = EndorsementDurationRollup.objects.values("partner_id", "day", "bucket")
    assert keys.count() == keys.distinct().count()  # one row per key, in each table
    assert histogram_keys.count() == histogram_keys.distinct().count()
    assert keys.count() + histogram_keys.count() == folded
    assert not EndorsementRollup.objects.filter(n=0, debited=0, credited=0, activated=0).exists()
    assert_same_everywhere(monkeypatch, partners)
    assert_gauge_matches()

    # More changes after compaction: folded rows plus new deltas still sum to the truth.
    Endorsement.objects.filter(pk__in=rng.sample(sorted(Endorsement.objects.values_list("pk", flat=True)), 50)).update(
        status="CANCELLED"
    )
    assert_same_everywhere(monkeypatch, partners)
    assert rollup_compact()[1] > 0
    assert_same_everywhere(monkeypatch, partners)


def test_a_rolled_back_change_leaves_the_rollup_as_it_was():
    policy = PolicyFactory()
    row = random_rows(random.Random(1), [policy], 1)[0]
    row.status = "SENT"
    row.save()
    before = list(EndorsementRollup.objects.order_by("id").values_list("status", "n", "compacted"))
    assert before == [("SENT", 1, False)]
    with pytest.raises(RuntimeError), transaction.atomic():
        Endorsement.objects.filter(pk=row.pk).update(status="ACTIVE")
        Endorsement.objects.create(**{**_fields(row), "idempotency_key": "second", "status": "RECEIVED"})
        assert EndorsementRollup.objects.count() == 4  # -SENT, +ACTIVE, +RECEIVED seen inside
        raise RuntimeError("roll back")
    assert list(EndorsementRollup.objects.order_by("id").values_list("status", "n", "compacted")) == before


def test_an_update_that_changes_no_rolled_up_column_writes_no_row():
    policy = PolicyFactory()
    row = random_rows(random.Random(2), [policy], 1)[0]
    row.save()
    count = EndorsementRollup.objects.count()
    Endorsement.objects.filter(pk=row.pk).update(last_error="timeout", employee_code="E-2")
    assert EndorsementRollup.objects.count() == count
    assert EndorsementRollup.objects.aggregate(n=Sum("n"))["n"] == 1


def _fields(row: Endorsement) -> dict:
    return {
        f.attname: getattr(row, f.attname)
        for f in Endorsement._meta.concrete_fields
        if f.attname not in ("id", "created_at", "updated_at")
    }
