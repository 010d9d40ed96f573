"""Analytics and /ops/ benchmark (SPEC §12, issue 14): server time at 1,000,000 endorsements over 5,000
employers and 100,000 outbox rows.

    createdb -h 127.0.0.1 -U postgres keel_bench_analytics
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/keel_bench_analytics manage.py migrate
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/keel_bench_analytics REDIS_URL=redis://127.0.0.1:6379/14 \
        .venv/bin/python bench/analytics.py [--rounds 5]

(`make bench` does all three.) The data set is generated once with `COPY` (endorsements and outbox rows;
employers, policies and ledger accounts with bulk inserts) and reused by later runs: 1,000,000 endorsements
received over the last 30 days (so all of them fall in the default range), 62 % ACTIVE with RECEIVED → ACTIVE
times of 30 s – 2 h, the rest spread over every other status; 100,000 outbox rows (95 % done, pending and
dead rows as a busy system has); 5,000 employers, 100 of them low-balance.

Measured in-process through Django's test client (the whole middleware stack and view, no network), each
figure the **worst of `--rounds`** requests:

- `GET /api/v1/analytics/endorsements` for one employer and for all 5,000, cold (response cache emptied
  before each request) and warm (served from the cache);
- `GET /ops/` as a staff user;
- for comparison, all employers cold answered from the endorsement rows instead of the hourly rollup and the
  duration histogram (ADR 0047, 0053), no target. Since ADR 0053 replaced the `created_at` covering index of
  the ACTIVE rows with the (duration bucket, `created_at`) one, that path's percentiles scan the table.

The limit measured in the same run: a bare `SELECT count(*)` of the endorsements table (worst of the same
rounds), printed with each figure's ratio to it. Targets: analytics ≤ 200 ms cold for one employer,
≤ 500 ms for all; `/ops/` ≤ 300 ms. Exits 1 if a target is missed.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import require_postgres_and_redis, setup_environment

ENDORSEMENTS = 1_000_000
EMPLOYERS = 5_000
OUTBOX_ROWS = 100_000
LOW_BALANCE = 100
DAYS = 30
STATUS_MIX = [
    ("ACTIVE", 62),
    ("REJECTED", 6),
    ("FAILED", 3),
    ("CANCELLED", 4),
    ("RECEIVED", 5),
    ("VALIDATED", 4),
    ("ON_HOLD_FUNDS", 3),
    ("ON_HOLD_REVIEW", 2),
    ("FUNDS_LOCKED", 4),
    ("SENT", 4),
    ("CONFIRMED", 3),
]
REJECTION_CLASSES = ["age_limit", "data_mismatch", "duplicate_member", "policy_lapsed", "other"]
TARGETS_MS = {"analytics one employer, cold": 200, "analytics all employers, cold": 500, "/ops/": 300}


def ensure_data() -> tuple[int, int]:
    """(partner id, one employer id); generates the data set unless a previous run left it."""
    from django.db import connection, transaction
    from django.utils import timezone

    from apps.employers.models import Employer, Policy
    from apps.endorsements.models import Endorsement
    from apps.insurers.models import Insurer
    from apps.ledger.models import AccountKind, LedgerAccount
    from apps.partners.models import Partner

    partner, _ = Partner.objects.get_or_create(name="bench-analytics")
    if Endorsement.objects.count() >= ENDORSEMENTS:
        return partner.pk, Employer.objects.filter(partner=partner).order_by("id").values_list("id", flat=True)[0]
    started = time.perf_counter()
    print(f"generating {ENDORSEMENTS:,} endorsements, {OUTBOX_ROWS:,} outbox rows, {EMPLOYERS:,} employers …")
    rng = random.Random(14)
    with transaction.atomic():
        insurer, _ = Insurer.objects.get_or_create(code="bench-insurer", defaults={"name": "Bench Insurer"})
        employers = Employer.objects.bulk_create(
            [
                Employer(
                    partner=partner, name=f"Bench {i}", external_ref=f"BENCH-{i:05d}", low_balance_threshold=100_000_00
                )
                for i in range(EMPLOYERS)
            ]
        )
        today = timezone.localdate()
        policies = Policy.objects.bulk_create(
            [
                Policy(
                    employer=e,
                    insurer=insurer,
                    policy_number=f"BENCH-{e.pk}",
                    start_date=today - timedelta(days=200),
                    end_date=today + timedelta(days=165),
                    premium_rate_per_mille="4.5",
                    default_sum_insured=500_000_00,
                )
                for e in employers
            ]
        )
        LedgerAccount.objects.bulk_create(
            [
                LedgerAccount(
                    kind=AccountKind.EMPLOYER,
                    employer=e,
                    posted=50_000_00 if i < LOW_BALANCE else 10_00_000_00,
                    held=0,
                    low_balance=i < LOW_BALANCE,
                )
                for i, e in enumerate(employers)
            ],
            ignore_conflicts=True,
        )
    now = timezone.now()
    weights = [w for _, w in STATUS_MIX]
    statuses = [s for s, _ in STATUS_MIX]
    columns = (
        "employer_id, policy_id, insurer_id, partner_id, type, status, employee_code, details, effective_date, "
        "premium_amount, premium_direction, annual_premium, remaining_days, term_days, content_hash, "
        "idempotency_key, review_approved, funding_generation, insurer_reference, rejection_class, "
        "rejection_reason, last_error, activated_at, created_at, updated_at"
    )
    table = Endorsement._meta.db_table
    with connection.cursor() as cursor, cursor.copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
        for n in range(ENDORSEMENTS):
            policy = policies[n % EMPLOYERS]
            status = rng.choices(statuses, weights)[0]
            kind = "addition" if n % 10 < 7 else ("deletion" if n % 10 < 9 else "correction")
            direction = {"addition": "debit", "deletion": "credit", "correction": "none"}[kind]
            premium = 0 if direction == "none" else rng.randint(100_00, 5_000_00)
            received = now - timedelta(seconds=rng.uniform(0, DAYS * 86400 - 3600))
            activated = received + timedelta(seconds=rng.uniform(30, 7200)) if status == "ACTIVE" else None
            rejection = rng.choice(REJECTION_CLASSES) if status in ("REJECTED", "FAILED") else ""
            copy.write_row(
                (
                    policy.employer_id, policy.pk, insurer.pk, partner.pk, kind, status, f"B{n}", "{}",
                    received.date(), premium, direction, premium * 4, 180, 365, f"{n:064x}", f"bench-{n}", False, 0,
                    "", rejection, "", "", activated, received, activated or received,
                )
            )  # fmt: skip
    with (
        connection.cursor() as cursor,
        cursor.copy(
            "COPY outbox_outboxmessage (topic, key, payload, headers, status, attempts, available_at, created_at, "
            "published_at, done_at, last_error, last_traceback) FROM STDIN"
        ) as copy,
    ):
        for n in range(OUTBOX_ROWS):
            created = now - timedelta(seconds=rng.uniform(0, 86400))
            status = "done" if n % 100 < 95 else ("pending" if n % 100 < 99 else "dead")
            done = created + timedelta(milliseconds=50) if status == "done" else None
            copy.write_row(
                ("endorsements.process", f"member:{n}", "{}", "{}", status, 1, created, created, done, done, "", "")
            )
    from apps.endorsements.rollup import rollup_compact

    while rollup_compact()[0]:  # the COPY's rollup deltas folded, as the 30-second beat job would (ADR 0047)
        pass
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE endorsements_endorsementrollup")
        cursor.execute(f"VACUUM ANALYZE {table}")
        cursor.execute("VACUUM ANALYZE outbox_outboxmessage")
        cursor.execute("ANALYZE")  # employers, policies, accounts: fresh statistics, as autovacuum would give
    print(f"generated in {time.perf_counter() - started:.1f} s")
    return partner.pk, employers[0].pk


def worst_ms(run, rounds: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return max(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    setup_environment()
    require_postgres_and_redis()
    import os

    os.environ.setdefault("API_RATE_LIMIT_PER_MINUTE", "1000000")
    os.environ.setdefault("API_RATE_LIMIT_PER_HOUR", "1000000")
    os.environ.setdefault("API_RATE_LIMIT_PER_DAY", "1000000")
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.db import connection
    from django.test import Client

    from apps.common.actors import Actor
    from apps.endorsements.models import Endorsement
    from apps.partners.models import Partner, Scope
    from apps.partners.services import api_key_create

    partner_id, employer_id = ensure_data()
    _, plaintext = api_key_create(
        partner=Partner.objects.get(pk=partner_id),
        name="bench analytics",
        scopes=[Scope.ANALYTICS_READ],
        all_employers=True,
        actor=Actor.system("bench"),
    )
    api = Client(HTTP_AUTHORIZATION=f"Api-Key {plaintext}")
    staff, _ = get_user_model().objects.get_or_create(username="bench-operator", defaults={"is_staff": True})
    ops = Client()
    ops.force_login(staff)
    table = Endorsement._meta.db_table

    def count() -> None:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT count(*) FROM {table}")
            cursor.fetchone()

    def get(client: Client, path: str, *, cold: bool, **params: object) -> None:
        if cold:
            cache.clear()
        response = client.get(path, params)
        assert response.status_code == 200, response.content[:300]

    def without_rollup(client: Client, path: str) -> None:
        """The same request answered from the endorsement rows (the path before ADR 0047), for comparison."""
        from apps.endorsements import analytics

        available = analytics.rollup_available
        analytics.rollup_available = lambda: False
        try:
            get(client, path, cold=True)
        finally:
            analytics.rollup_available = available

    one = {"employer": employer_id}
    get(api, "/api/v1/analytics/endorsements", cold=True)  # warm the connection, the plan cache and the OS cache
    get(ops, "/ops/", cold=True)
    rows = Endorsement.objects.count()
    figures = {
        "SELECT count(*) (limit)": worst_ms(count, args.rounds),
        "analytics one employer, cold": worst_ms(
            lambda: get(api, "/api/v1/analytics/endorsements", cold=True, **one), args.rounds
        ),
        "analytics one employer, warm": worst_ms(
            lambda: get(api, "/api/v1/analytics/endorsements", cold=False, **one), args.rounds
        ),
        "analytics all employers, cold": worst_ms(
            lambda: get(api, "/api/v1/analytics/endorsements", cold=True), args.rounds
        ),
        "all employers, cold, no rollup": worst_ms(
            lambda: without_rollup(api, "/api/v1/analytics/endorsements"), args.rounds
        ),
        "analytics all employers, warm": worst_ms(
            lambda: get(api, "/api/v1/analytics/endorsements", cold=False), args.rounds
        ),
        "/ops/": worst_ms(lambda: get(ops, "/ops/", cold=False), args.rounds),
    }
    limit = figures["SELECT count(*) (limit)"]
    print(f"{rows:,} endorsements, worst of {args.rounds} rounds each (server time, in-process):")
    missed = []
    for name, ms in figures.items():
        target = TARGETS_MS.get(name)
        verdict = ""
        if target is not None:
            verdict = f"  target ≤ {target} ms: {'met' if ms <= target else 'MISSED'}"
            if ms > target:
                missed.append(name)
        print(f"  {name:<32} {ms:8.1f} ms   {ms / limit:5.2f}× count(*){verdict}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
