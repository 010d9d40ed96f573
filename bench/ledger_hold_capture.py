"""Ledger benchmark at service level on ONE hot employer: rounds of `holds_place_bulk` of `--bulk-size` holds followed
by `holds_capture_bulk` of the references placed — the only hold and capture path there is (ADR 0036; a single
hold is a bulk of one) — with 1, 2 and 4 threads: pairs/s and p50/p99 per round. Target (issue 9): ≥ 2,000
hold+capture pairs/s. The same path inside the whole pipeline is `bench/ledger_hot_employer.py`.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/keel_ledger .venv/bin/python bench/ledger_hold_capture.py \
        [--seconds 5] [--threads 1,2,4] [--bulk-size 100]

Run `manage.py migrate` on that database first (this script migrates nothing). It creates its own partner and
employer (and leaves them, with their ledger rows, behind: ledger rows are append-only).

The limit measured in the same run: a raw single-row `UPDATE … SET x = x + 1 WHERE id = …; COMMIT` loop on the
same PostgreSQL from one connection — one hot row, one commit per statement, which is the ceiling any design
that serialises an employer on its account row and commits each change can approach.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("DATABASE_POOL_MAX", "12")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def raw_update_commit_rate(seconds: float) -> float:
    """Single-row `UPDATE … SET x = x + 1 WHERE id = 1; COMMIT` loop on one connection (a logged table)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS bench_ledger_raw (id bigint primary key, x bigint not null)")
        cursor.execute("INSERT INTO bench_ledger_raw VALUES (1, 0) ON CONFLICT (id) DO NOTHING")
    connection.set_autocommit(False)
    count = 0
    try:
        deadline = time.perf_counter() + seconds
        started = time.perf_counter()
        with connection.cursor() as cursor:
            while time.perf_counter() < deadline:
                cursor.execute("UPDATE bench_ledger_raw SET x = x + 1 WHERE id = %s", [1])
                connection.commit()
                count += 1
        elapsed = time.perf_counter() - started
    finally:
        connection.set_autocommit(True)
        with connection.cursor() as cursor:
            cursor.execute("DROP TABLE IF EXISTS bench_ledger_raw")
    return count / elapsed


def setup_employer() -> int:
    from apps.common.actors import Actor
    from apps.employers.models import Employer
    from apps.ledger.services import topup_post
    from apps.partners.models import Partner

    run = uuid.uuid4().hex[:8]
    partner = Partner.objects.create(name=f"bench-ledger-{run}")
    employer = Employer.objects.create(partner=partner, name=f"Bench {run}", external_ref=f"BENCH-{run}")
    topup_post(employer_id=employer.pk, amount=10**13, reference=f"bench-fund-{run}", actor=Actor.system("bench"))
    return employer.pk


def run_threads(threads: int, seconds: float, step: Callable[[int, int], int]) -> tuple[float, list[float], int]:
    """Start `threads` threads together; each calls `step(thread, n)` for n = 0, 1, … until `seconds` have
    passed, timing every call. `step` returns how many of its requests were not placed. Returns (elapsed,
    latencies in ms, not placed)."""
    from django.db import connection

    latencies: list[list[float]] = [[] for _ in range(threads)]
    failures = [0] * threads
    barrier = threading.Barrier(threads + 1)
    stop = threading.Event()

    def worker(i: int) -> None:
        try:
            barrier.wait()
            n = 0
            while not stop.is_set():
                started = time.perf_counter()
                failures[i] += step(i, n)
                latencies[i].append((time.perf_counter() - started) * 1000)
                n += 1
        finally:
            connection.close()

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    started = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for w in workers:
        w.join()
    return time.perf_counter() - started, [x for per in latencies for x in per], sum(failures)


def bulk_rounds(employer_id: int, threads: int, seconds: float, size: int) -> tuple[int, float, list[float], int]:
    """Each thread loops rounds of `holds_place_bulk` of `size` holds, then `holds_capture_bulk` of the references
    that were placed, until the deadline. Returns (pairs, elapsed, round latencies ms, requests not placed)."""
    from apps.common.actors import Actor
    from apps.ledger.services import HoldRequest, holds_capture_bulk, holds_place_bulk

    actor = Actor.system("bench")
    run = uuid.uuid4().hex[:8]

    def round_trip(i: int, n: int) -> int:
        requests = [HoldRequest(f"bench-bulk-{run}-{i}-{n}-{j}", 1_00) for j in range(size)]
        results = holds_place_bulk(employer_id=employer_id, requests=requests, actor=actor)
        placed = [r.hold.reference for r in results if r.placed and r.hold is not None]
        holds_capture_bulk(references=placed, actor=actor)
        return size - len(placed)

    elapsed, latencies, failures = run_threads(threads, seconds, round_trip)
    return len(latencies) * size - failures, elapsed, latencies, failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", default="1,2,4")
    parser.add_argument("--bulk-size", type=int, default=100, help="holds per round")
    args = parser.parse_args()

    import django

    django.setup()
    from django.db import connection
    from django.db.utils import DatabaseError

    from apps.ledger.models import LedgerAccount
    from apps.ledger.selectors import ledger_verify

    if connection.vendor != "postgresql":
        print("This benchmark needs PostgreSQL: set DATABASE_URL=postgres://…", file=sys.stderr)
        return 2
    try:
        LedgerAccount.objects.exists()
    except DatabaseError:
        print("Ledger tables are missing: run `manage.py migrate` on this database first.", file=sys.stderr)
        return 2

    print(f"PostgreSQL {connection.pg_version}; {args.seconds:.0f} s per measurement")
    limit = raw_update_commit_rate(args.seconds)
    print(f"limit: raw single-row UPDATE+COMMIT, 1 connection: {limit:,.0f} /s")
    employer_id = setup_employer()
    bulk_rounds(employer_id, 1, 0.5, args.bulk_size)  # warm-up (connections, plans, system accounts)

    ok = True
    for threads in [int(t) for t in args.threads.split(",")]:
        count, elapsed, latencies, failures = bulk_rounds(employer_id, threads, args.seconds, args.bulk_size)
        rate = count / elapsed
        p50, p99 = statistics.median(latencies), percentile(latencies, 99)
        meets = rate >= 2000
        ok = ok and meets
        print(
            f"threads={threads}: holds_place_bulk ×{args.bulk_size} then holds_capture_bulk per round: "
            f"{len(latencies)} rounds, {count} pairs in {elapsed:.1f} s = {rate:,.0f} pairs/s, p50 {p50:.1f} ms, "
            f"p99 {p99:.1f} ms per round; ratio to raw UPDATE+COMMIT limit {rate / limit:.2f} (pairs); "
            f"not placed {failures}; target ≥2,000 pairs/s: {'met' if meets else 'NOT met'}"
        )
    report = ledger_verify()
    print("ledger_verify:", "OK" if report.ok else f"{len(report.problems)} problem(s): {report.problems[:5]}")
    return 0 if ok and report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
