"""Outbox relay benchmark (SPEC §12): relay throughput with one relay process, and commit → consumer-start
latency at a fixed rate through a real Celery worker. Needs PostgreSQL and Redis:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/keel REDIS_URL=redis://127.0.0.1:6379/14 \
        .venv/bin/python bench/outbox_relay.py [--events 20000] [--rate 200] [--seconds 10]

Limits measured in the same run, so the figures can be compared across machines:
- raw `INSERT … COMMIT` rate of the same PostgreSQL (one row per transaction, one connection);
- raw Redis `LPUSH` round trip of the same Redis.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("LOG_LEVEL", "WARNING")

BENCH_QUEUE = "bench"
BENCH_TOPIC = "bench.outbox"
LATENCY_KEY = "keel:bench:outbox:latency"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def raw_insert_commit_rate(n: int) -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS bench_raw (id bigserial primary key, payload jsonb)")
    connection.set_autocommit(False)
    try:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            for i in range(n):
                cursor.execute("INSERT INTO bench_raw (payload) VALUES (%s)", ['{"n": %d}' % i])
                connection.commit()
        elapsed = time.perf_counter() - started
    finally:
        connection.set_autocommit(True)
    return n / elapsed


def relay_throughput(n: int) -> tuple[float, int]:
    from django.utils import timezone

    from apps.outbox import registry
    from apps.outbox.models import OutboxMessage
    from apps.outbox.relay import relay_once

    registry.register(BENCH_TOPIC, lambda m: None, queue=BENCH_QUEUE, name="bench.noop")
    now = timezone.now()
    OutboxMessage.objects.bulk_create(
        [OutboxMessage(topic=BENCH_TOPIC, payload={"n": i}, created_at=now, available_at=now) for i in range(n)],
        batch_size=5000,
    )
    started = time.perf_counter()
    published = 0
    while batch := relay_once(batch_size=1000):
        published += batch
    elapsed = time.perf_counter() - started
    return published / elapsed, published


def latency_at_rate(rate: int, seconds: float, pool: str = "threads", concurrency: int = 4) -> list[float]:
    import redis
    from django.conf import settings
    from django.db import transaction

    from apps.outbox.services import outbox_enqueue

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(LATENCY_KEY)
    env = {**os.environ, "KEEL_BENCH": "1", "OUTBOX_NUDGE_ON_COMMIT": "true"}
    worker = subprocess.Popen(  # noqa: S603 - our own worker
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", f"outbox,{BENCH_QUEUE}", "-c", str(concurrency),
         "-P", pool, "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING",
         "--include", "apps.outbox.bench_consumer", "-n", f"bench-{os.getpid()}@%h"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(4)  # worker start-up
        # warm-up
        for _ in range(20):
            with transaction.atomic():
                outbox_enqueue(topic=BENCH_TOPIC, payload={"warmup": True})
        time.sleep(1)
        client.delete(LATENCY_KEY)
        total = int(rate * seconds)
        interval = 1.0 / rate
        started = time.perf_counter()
        for i in range(total):
            target = started + i * interval
            pause = target - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            with transaction.atomic():
                outbox_enqueue(topic=BENCH_TOPIC, payload={"n": i})
        deadline = time.time() + 15
        while client.llen(LATENCY_KEY) < total and time.time() < deadline:
            time.sleep(0.2)
        return [float(v) for v in client.lrange(LATENCY_KEY, 0, -1)]
    finally:
        worker.terminate()
        worker.wait(timeout=20)


def redis_round_trip_ms(n: int = 2000) -> float:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    started = time.perf_counter()
    for i in range(n):
        client.lpush("keel:bench:rt", i)
    client.delete("keel:bench:rt")
    return (time.perf_counter() - started) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--pool", default="threads", help="Celery pool of the latency run's worker")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--latency-only", action="store_true")
    args = parser.parse_args()
    if not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get("REDIS_URL"):
        sys.exit("This benchmark needs PostgreSQL and Redis: set DATABASE_URL=postgres://… and REDIS_URL=redis://…")

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from apps.outbox.models import OutboxMessage

    OutboxMessage.objects.filter(topic=BENCH_TOPIC).delete()

    raw_rate = raw_insert_commit_rate(3000)
    throughput, published = relay_throughput(args.events)
    import redis
    from django.conf import settings

    redis.Redis.from_url(settings.REDIS_URL).delete(BENCH_QUEUE)
    OutboxMessage.objects.filter(topic=BENCH_TOPIC).delete()

    rt_ms = redis_round_trip_ms()
    latencies = latency_at_rate(args.rate, args.seconds, args.pool, args.concurrency)
    OutboxMessage.objects.filter(topic=BENCH_TOPIC).delete()
    expected = int(args.rate * args.seconds)

    print("\nOutbox relay benchmark")
    print(f"  machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"  limit  raw INSERT…COMMIT (1 row/txn, 1 connection): {raw_rate:,.0f} rows/s")
    print(f"  limit  raw Redis LPUSH round trip: {rt_ms:.3f} ms")
    print(f"  relay throughput, one relay process, {published:,} events to Redis: {throughput:,.0f} events/s")
    print(f"      ratio to raw INSERT…COMMIT rate: {throughput / raw_rate:.2f}×   target ≥ 5,000/s: "
          f"{'MET' if throughput >= 5000 else 'MISSED'} ({throughput / 5000:.2f}× target)")
    if latencies:
        ms = [v * 1000 for v in latencies]
        p50, p95, p99 = percentile(ms, 50), percentile(ms, 95), percentile(ms, 99)
        print(f"  commit → consumer start at {args.rate}/s for {args.seconds:.0f} s: {len(ms)}/{expected} delivered")
        print(f"      p50 {p50:.1f} ms   p95 {p95:.1f} ms   p99 {p99:.1f} ms   max {max(ms):.1f} ms   "
              f"mean {statistics.mean(ms):.1f} ms")
        print(f"      p99 / Redis round trip: {p99 / rt_ms:.0f}×   target p99 ≤ 50 ms: "
              f"{'MET' if p99 <= 50 else 'MISSED'}")
    else:
        print("  commit → consumer start: no deliveries recorded (did the worker start?)")


if __name__ == "__main__":
    main()
