"""Endorsement API benchmarks (SPEC §12) against a real gunicorn server on PostgreSQL + Redis:

1. single `POST /api/v1/endorsements` latency at a fixed rate (default 100 req/s for 10 s), with the same
   rate of `GET /health` on the same server as the bare-Django limit measured in the same run;
2. a 10,000-row JSON batch `POST /api/v1/endorsement-batches`, accepted and persisted with its outbox rows,
   against the same PostgreSQL's raw bulk insert of 10,000 rows measured in the same run.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/keel_bench REDIS_URL=redis://127.0.0.1:6379/14 \
        .venv/bin/python bench/endorsement_api.py [--rate 100] [--seconds 10] [--rows 10000]
"""

from __future__ import annotations

import argparse
import gc
import os
import threading
import time
import uuid
from datetime import date

from _common import bench_world, free_port, percentile, require_postgres_and_redis, setup_environment, start_gunicorn

setup_environment()


def setup_world() -> tuple[str, int, int]:
    return bench_world("api", rate_limit=10_000_000)


def body(employer: int, policy: int, code: str) -> dict:
    return {
        "employer": employer,
        "policy": policy,
        "type": "addition",
        "effective_date": date.today().isoformat(),
        "employee": {
            "employee_code": code,
            "first_name": "Bench",
            "last_name": "Member",
            "date_of_birth": "1990-01-01",
            "gender": "male",
            "email": f"{code.lower()}@bench.example",
        },
    }


def paced(url: str, rate: int, seconds: float, make_request) -> tuple[list[float], int]:  # type: ignore[no-untyped-def]
    """Fire requests on a fixed schedule from a small thread pool (open loop: late starts are not hidden)."""
    import requests

    total = int(rate * seconds)
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    started = time.perf_counter()
    next_index = iter(range(total))

    def worker() -> None:
        nonlocal errors
        session = requests.Session()
        for i in next_index:
            due = started + i / rate
            pause = due - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            response = make_request(session, i)
            with lock:
                # From the scheduled start, so a request that started late counts its wait (open loop).
                latencies.append((time.perf_counter() - due) * 1000)
                if response.status_code >= 400:
                    errors += 1

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors


def raw_bulk_insert_seconds(rows: int) -> float:
    from django.db import connection, transaction

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE IF NOT EXISTS bench_rows (id bigserial primary key, code text, "
            "payload jsonb, created_at timestamptz default now())"
        )
    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO bench_rows (code, payload) VALUES (%s, %s)",
            [(f"R{i}", '{"type": "addition"}') for i in range(rows)],
        )
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=3, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=1, help="threads per gunicorn worker")
    args = parser.parse_args()
    require_postgres_and_redis()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    key, employer, policy = setup_world()
    port = free_port()
    server = start_gunicorn(port, workers=args.workers, threads=args.threads)
    import requests

    base = f"http://127.0.0.1:{port}"
    try:
        headers = {"Authorization": f"Api-Key {key}"}
        run = uuid.uuid4().hex[:6]
        for i in range(50):  # warm-up of both endpoints and the workers' connection pools
            requests.get(f"{base}/health")
            requests.post(f"{base}/api/v1/endorsements", json=body(employer, policy, f"W{run}{i}"), headers=headers)

        # The load generator's own garbage collections would stall its threads and count as server latency.
        gc.collect()
        gc.freeze()
        health, _ = paced(base, args.rate, args.seconds, lambda s, i: s.get(f"{base}/health"))
        posts, errors = paced(
            base,
            args.rate,
            args.seconds,
            lambda s, i: s.post(
                f"{base}/api/v1/endorsements", json=body(employer, policy, f"P{run}{i}"), headers=headers
            ),
        )
        rows = [
            {k: v for k, v in body(employer, policy, f"B{run}{i}").items() if k not in ("employer", "policy")}
            for i in range(args.rows)
        ]
        raw = raw_bulk_insert_seconds(args.rows)
        started = time.perf_counter()
        response = requests.post(
            f"{base}/api/v1/endorsement-batches",
            json={"employer": employer, "policy": policy, "rows": rows},
            headers=headers,
            timeout=120,
        )
        batch_seconds = time.perf_counter() - started
        batch_ok = response.status_code == 202
        accepted = response.json().get("accepted") if batch_ok else f"HTTP {response.status_code} {response.text[:200]}"
        probe = requests.post(f"{base}/api/v1/endorsements", json=body(employer, policy, f"Q{run}"), headers=headers)
    finally:
        server.terminate()
        server.wait(timeout=20)

    h99, p50, p95, p99 = percentile(health, 99), percentile(posts, 50), percentile(posts, 95), percentile(posts, 99)
    print("\nEndorsement API benchmark")
    print(
        f"  machine: {os.cpu_count()} cores; gunicorn {args.workers} workers × {args.threads} threads; "
        "PostgreSQL + Redis"
    )
    print(f"  limit  GET /health at {args.rate}/s: p50 {percentile(health, 50):.1f} ms, p99 {h99:.1f} ms")
    print(
        f"  POST /api/v1/endorsements at {args.rate}/s for {args.seconds:.0f} s: {len(posts)} requests, {errors} errors"
    )
    print(
        f"      p50 {p50:.1f} ms   p95 {p95:.1f} ms   p99 {p99:.1f} ms   p99 ratio to /health p99: {p99 / h99:.1f}×"
        f"   target p99 ≤ 30 ms: {'MET' if p99 <= 30 else 'MISSED'}"
    )
    print(f"  limit  raw bulk INSERT of {args.rows:,} rows in one transaction: {raw:.3f} s")
    print(
        f"  batch of {args.rows:,} rows accepted and persisted with outbox rows: {batch_seconds:.2f} s "
        f"(accepted {accepted}); ratio to raw insert: {batch_seconds / raw:.1f}×   target ≤ 2 s: "
        f"{'MET' if batch_ok and batch_seconds <= 2 else 'MISSED'}"
    )
    if errors:
        print(f"  {errors} POSTs failed; a probe POST afterwards answered HTTP {probe.status_code}: {probe.text[:300]}")


if __name__ == "__main__":
    main()
