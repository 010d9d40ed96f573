"""Outbox relay benchmark (SPEC §12, ADR 0002). Needs PostgreSQL and Redis:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/keel_bench_outbox REDIS_URL=redis://127.0.0.1:6379/14 \\
        .venv/bin/python bench/outbox_relay.py [--events 20000] [--rate 200] [--seconds 10] [--pool threads]

It measures, each against a limit measured in the same run on the same machine:

(a) the raw `INSERT … COMMIT` rate of this PostgreSQL (one row per transaction, one connection, temp table)
    and the raw Redis `LPUSH` rate — the limits;
(b) relay throughput: N events inserted, then drained by one relay (this process) into Redis as real Celery
    messages with the real default publisher; target ≥ 5,000 events/s;
(c) commit → consumer-start latency at a fixed rate (default 200 events/s for 10 s, each event its own
    committed transaction) through a real Celery worker subprocess, in two set-ups:
      1. "nudge": the default deployment — each commit's on_commit nudge queues an `outbox.relay` task that a
         worker runs (worker consumes `outbox` and the bench queue);
      2. "relay process": `manage.py outbox_relay` woken by PostgreSQL LISTEN/NOTIFY at commit, nudges off;
    target p99 ≤ 50 ms. The consumer is `apps/outbox/bench_consumer.py`, registered only in processes started
    with KEEL_BENCH=1 (set here for the worker).

Use a database of its own (it is created if missing): a relay publishes every due row it finds, so a
shared database would mix other work into the figures and this run into other work.

Everything the benchmark writes (outbox rows of topic `bench.outbox`, the `bench` queue, the latency list)
is removed at the end, and every subprocess it started is stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("LOG_LEVEL", "WARNING")

TARGET_THROUGHPUT = 5_000
TARGET_P99_MS = 50.0


def fail(message: str) -> None:
    sys.exit(f"bench/outbox_relay.py: {message}")


def check_services() -> None:
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")) or not redis_url.startswith("redis://"):
        fail(
            "this benchmark needs PostgreSQL and Redis. Set DATABASE_URL=postgres://… and REDIS_URL=redis://…, "
            "e.g. DATABASE_URL=postgres://postgres@127.0.0.1:5432/keel_bench_outbox REDIS_URL=redis://127.0.0.1:6379/14"
        )
    import psycopg
    import redis

    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        fail(f"Redis at {redis_url} is not reachable: {exc}")
    # Create the benchmark's database if it does not exist yet (a dedicated one keeps the figures clean).
    base, _, name = database_url.rpartition("/")
    name = name.split("?")[0]
    try:
        with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=3) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
                conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        fail(f"PostgreSQL at {base} is not reachable: {exc}")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


# --- (a) limits --------------------------------------------------------------------------------------------


def raw_insert_commit_rate(n: int) -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS bench_raw (id bigserial PRIMARY KEY, payload jsonb)")
    connection.set_autocommit(False)
    try:
        with connection.cursor() as cursor:
            started = time.perf_counter()
            for i in range(n):
                cursor.execute("INSERT INTO bench_raw (payload) VALUES (%s)", [f'{{"n": {i}}}'])
                connection.commit()
            elapsed = time.perf_counter() - started
            cursor.execute("DROP TABLE bench_raw")
            connection.commit()
    finally:
        connection.set_autocommit(True)
    return n / elapsed


def raw_redis_lpush_rate(n: int = 5000) -> float:
    import redis
    from django.conf import settings

    client = redis.Redis.from_url(settings.REDIS_URL)
    started = time.perf_counter()
    for i in range(n):
        client.lpush("keel:bench:raw", i)
    elapsed = time.perf_counter() - started
    client.delete("keel:bench:raw")
    return n / elapsed


def vacuum_outbox() -> None:
    """Start each measurement from a vacuumed table: the steady state autovacuum keeps (migration 0002 makes
    it vacuum the outbox every 1,000 dead rows), not the bloat of the previous measurement's rows."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE outbox_outboxmessage")
        cursor.execute("VACUUM ANALYZE outbox_inboxentry")


# --- (b) relay throughput ----------------------------------------------------------------------------------


def purge_bench_queue() -> int:
    from apps.outbox.bench_consumer import BENCH_QUEUE
    from config.celery import app

    with app.connection_for_write() as conn:
        return int(conn.default_channel.queue_purge(BENCH_QUEUE) or 0)


def relay_throughput(n: int, batch_size: int) -> tuple[float, int]:
    from django.utils import timezone

    from apps.outbox.contracts import OutboxTopic
    from apps.outbox.models import OutboxMessage
    from apps.outbox.relay import relay_once

    now = timezone.now()
    vacuum_outbox()
    OutboxMessage.objects.bulk_create(
        [
            OutboxMessage(topic=OutboxTopic.BENCH, payload={"n": i, "warmup": True}, created_at=now, available_at=now)
            for i in range(n)
        ],
        batch_size=5000,
    )
    started = time.perf_counter()
    published = 0
    while batch := relay_once(batch_size=batch_size):
        published += batch
    elapsed = time.perf_counter() - started
    purge_bench_queue()
    OutboxMessage.objects.filter(topic=OutboxTopic.BENCH).delete()
    return published / elapsed, published


# --- (c) latency -------------------------------------------------------------------------------------------


def start(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def wait_for(condition: Any, *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def latency_at_rate(
    *, rate: int, seconds: float, mode: str, pool: str, concurrency: int, linger_ms: float
) -> dict[str, Any]:
    import redis
    from django.conf import settings
    from django.db import transaction

    from apps.outbox.bench_consumer import BENCH_QUEUE, LATENCY_KEY
    from apps.outbox.contracts import OutboxTopic
    from apps.outbox.models import OutboxMessage, OutboxStatus
    from apps.outbox.services import outbox_enqueue
    from config.celery import app

    nudge = mode == "nudge"
    vacuum_outbox()
    settings.OUTBOX = {**settings.OUTBOX, "NUDGE_ON_COMMIT": nudge}  # this process is the producer
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(LATENCY_KEY)
    env = {**os.environ, "KEEL_BENCH": "1", "OUTBOX_NUDGE_ON_COMMIT": "true" if nudge else "false"}
    name = f"bench-{os.getpid()}-{mode}@%h"
    queues = f"outbox,{BENCH_QUEUE}" if nudge else BENCH_QUEUE
    worker = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", queues, "-P", pool]
    worker += ["-c", str(concurrency)]
    quiet = ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING", "-n", name]
    processes = [start([*worker, *quiet], env)]
    if not nudge:
        relay = [sys.executable, "manage.py", "outbox_relay", "--idle-seconds", "1", "--linger-ms", str(linger_ms)]
        processes.append(start(relay, env))
    try:
        hostname = name.replace("%h", os.uname().nodename)
        wait_for(lambda: bool(app.control.ping([hostname], timeout=0.5)), seconds=60, what="the Celery worker")

        def enqueue(payload: dict[str, Any]) -> None:
            with transaction.atomic():
                outbox_enqueue(topic=OutboxTopic.BENCH, payload=payload)

        for _ in range(50):  # warm-up: connections, imports, pools
            enqueue({"warmup": True})
        wait_for(
            lambda: (
                not OutboxMessage.objects.filter(topic=OutboxTopic.BENCH).exclude(status=OutboxStatus.DONE).exists()
            ),
            seconds=30,
            what="the warm-up events",
        )
        client.delete(LATENCY_KEY)
        total = int(rate * seconds)
        started = time.perf_counter()
        for i in range(total):
            pause = started + i / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            enqueue({"n": i})
        achieved_rate = total / (time.perf_counter() - started)
        with contextlib.suppress(RuntimeError):  # reported as "delivered x/y"
            wait_for(lambda: client.llen(LATENCY_KEY) >= total, seconds=30, what="the deliveries")
        latency_ms = [float(item) * 1000 for item in client.lrange(LATENCY_KEY, 0, -1)]
        # The first hop, commit → claimed by a relay, from the rows themselves (published_at = claim time).
        claim_ms = [
            (published - created).total_seconds() * 1000
            for created, published in OutboxMessage.objects.filter(topic=OutboxTopic.BENCH, published_at__isnull=False)
            .exclude(payload__has_key="warmup")
            .values_list("created_at", "published_at")
        ]
    finally:
        for process in processes:
            stop(process)
        client.delete(LATENCY_KEY)
        purge_bench_queue()
        OutboxMessage.objects.filter(topic=OutboxTopic.BENCH).delete()
    return {"mode": mode, "expected": total, "rate": achieved_rate, "latency_ms": latency_ms, "claim_ms": claim_ms}


# --- report ------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="events for the throughput run")
    parser.add_argument("--batch-size", type=int, default=1000, help="rows per claim in the throughput run")
    parser.add_argument("--baseline-rows", type=int, default=5000, help="rows for the raw INSERT…COMMIT limit")
    parser.add_argument("--rate", type=int, default=200, help="events/s for the latency runs")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each latency run")
    parser.add_argument("--pool", default="threads", help="Celery pool of the latency runs' worker")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--modes", default="nudge,relay-process", help="latency set-ups to run")
    parser.add_argument("--linger-ms", type=float, default=5.0, help="outbox_relay --linger-ms (relay-process)")
    args = parser.parse_args()
    check_services()

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)

    print(f"Outbox relay benchmark — {os.cpu_count()} cores, Python {sys.version.split()[0]}", flush=True)
    insert_rate = raw_insert_commit_rate(args.baseline_rows)
    lpush_rate = raw_redis_lpush_rate()
    print(f"  limits: raw INSERT…COMMIT {insert_rate:,.0f} rows/s, raw Redis LPUSH {lpush_rate:,.0f}/s", flush=True)
    throughput, published = relay_throughput(args.events, args.batch_size)
    print(f"  relay throughput: {published:,} events in {published / throughput:.2f} s", flush=True)
    runs = []
    for mode in args.modes.split(","):
        run = latency_at_rate(
            rate=args.rate,
            seconds=args.seconds,
            mode=mode,
            pool=args.pool,
            concurrency=args.concurrency,
            linger_ms=args.linger_ms,
        )
        print(f"  latency run '{mode}': {len(run['latency_ms'])}/{run['expected']} delivered", flush=True)
        runs.append(run)

    rows = [
        ("limit: raw INSERT…COMMIT, 1 row/txn", f"{insert_rate:,.0f} rows/s", "", ""),
        ("limit: raw Redis LPUSH, 1 client", f"{lpush_rate:,.0f} /s", "", ""),
        (
            f"relay throughput, 1 relay, {published:,} events → Redis",
            f"{throughput:,.0f} events/s",
            f"{throughput / insert_rate:.2f}× INSERT…COMMIT",
            f"≥ {TARGET_THROUGHPUT:,}/s: {'met' if throughput >= TARGET_THROUGHPUT else 'MISSED'} "
            f"({throughput / TARGET_THROUGHPUT:.2f}×)",
        ),
    ]
    for run in runs:
        ms = run["latency_ms"]
        if not ms:
            rows.append((f"commit → consumer, {run['mode']}", "no deliveries", "", "MISSED"))
            continue
        p50, p95, p99 = percentile(ms, 50), percentile(ms, 95), percentile(ms, 99)
        rows.append(
            (
                f"commit → consumer start @ {run['rate']:.0f}/s, {run['mode']}, -P {args.pool} -c {args.concurrency}",
                f"p50 {p50:.1f} / p95 {p95:.1f} / p99 {p99:.1f} ms",
                f"max {max(ms):.1f} ms, {len(ms)}/{run['expected']} delivered",
                f"p99 ≤ {TARGET_P99_MS:.0f} ms: {'met' if p99 <= TARGET_P99_MS else 'MISSED'}",
            )
        )
        claim = run["claim_ms"]
        rows.append(
            (
                f"  of which commit → claimed by a relay, {run['mode']}",
                f"p50 {percentile(claim, 50):.1f} / p99 {percentile(claim, 99):.1f} ms",
                f"mean total {statistics.mean(ms):.1f} ms",
                "",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print()
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


if __name__ == "__main__":
    main()
