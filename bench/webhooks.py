"""Webhook delivery benchmark (SPEC §10, §12; ADR 0030). Needs PostgreSQL and Redis:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/keel_bench_webhooks REDIS_URL=redis://127.0.0.1:6379/13 \\
        .venv/bin/python bench/webhooks.py [--events 500] [--rate 100] [--seconds 5] [--repeat 5] [--runs 5]

Events are fanned out to 10 endpoints on a local receiver (a separate process, one port, one path per endpoint).
Each figure comes with its limit, measured in the same run:

(a) throughput: `--events` events (× 10 endpoints) committed at once, delivered by **one** `manage.py
    webhook_dispatch` process; limit: a bare urllib3 client (10 threads, keep-alive, no signing, no database)
    POSTing to the same receiver. Target ≥ 1,000 deliveries/s.
(b) with an 11th endpoint that never answers in time (its requests sleep past the read timeout), the 10 healthy
    endpoints' throughput, median of `--runs` runs each way; target: at most 25% lower.
(c) commit → delivered latency at `--rate` events/s (each event its own committed transaction), through the real
    path: `Event` rows committed → NOTIFY keel_events → `webhook_dispatch` (sequencer: positions + fan-out, then
    sends) → receiver; limit: the outbox relay's commit → consumer-start latency at the same rate (the
    `bench.outbox` consumer through `outbox_relay` and a Celery worker, running alongside), measured alternately.
    `--repeat` rounds, each judged on its own: the ratio webhook p99 ÷ relay p99 of the same round (both measured
    alternately under the same load), and the worst round's ratio is reported. Target: webhook p99 ≤ 3× relay p99.

Use a database of its own (created if missing). Everything it starts is stopped at the end; its rows are removed.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import latency_ratio, percentile, worst_latency_round  # noqa: E402

os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.local"
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ["OUTBOX_NUDGE_ON_COMMIT"] = "false"
os.environ["WEBHOOKS_NUDGE_ON_COMMIT"] = "false"
os.environ.setdefault("WEBHOOKS_READ_TIMEOUT_SECONDS", "2")
os.environ.setdefault("WEBHOOKS_TOTAL_TIMEOUT_SECONDS", "3")
# DEBUG is off: the key that seals webhook secrets at rest (ADR 0042) must be set; a bench-only one.
os.environ.setdefault(
    "WEBHOOK_SECRETS_KEY", base64.b64encode(hashlib.sha256(b"keel-bench-only:webhook-secrets").digest()).decode()
)

TARGET_DELIVERIES = 1_000
TARGET_LATENCY_RATIO = 3.0
TARGET_SLOWDOWN = 0.25
ENDPOINTS = 10


def fail(message: str) -> None:
    sys.exit(f"bench/webhooks.py: {message}")


# --- the receiver (its own process: `bench/webhooks.py --serve PORT`) ---------------------------------------


def serve(port: int) -> None:
    """An asyncio HTTP/1.1 keep-alive receiver (one thread: no GIL contention between connections). Answers
    204 to /e<N>; /slow sleeps past the dispatcher's read timeout. GET /arrivals returns
    [[webhook-id, path, unix time], …] and clears them; GET /count the number of arrivals."""
    import asyncio

    arrivals: list[tuple[str, str, float]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                now = time.time()
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if ":" in line:
                        name, value = line.split(":", 1)
                        headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length") or 0)
                if length:
                    await reader.readexactly(length)
                if method == "GET":
                    body = str(len(arrivals)).encode() if path == "/count" else json.dumps(arrivals).encode()
                    if path != "/count":
                        arrivals.clear()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                else:
                    if path == "/slow":
                        await asyncio.sleep(30)
                    arrivals.append((headers.get("webhook-id", ""), path, now))
                    writer.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=256)
        loop = asyncio.get_running_loop()
        stopped = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, lambda: stopped.done() or stopped.set_result(None))
        async with server:
            await stopped

    asyncio.run(main())


# --- helpers ---------------------------------------------------------------------------------------------------


def check_services() -> None:
    database_url = os.environ.get("DATABASE_URL", "")
    redis_url = os.environ.get("REDIS_URL", "")
    if not database_url.startswith(("postgres://", "postgresql://")) or not redis_url.startswith("redis://"):
        fail("set DATABASE_URL=postgres://…/keel_bench_webhooks and REDIS_URL=redis://…")
    import psycopg
    import redis

    try:
        redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        fail(f"Redis at {redis_url} is not reachable: {exc}")
    base, _, name = database_url.rpartition("/")
    name = name.split("?")[0]
    with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=3) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone():
            conn.execute(f'CREATE DATABASE "{name}"')


def start(command: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env or os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
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
        time.sleep(0.02)


class ReceiverClient:
    def __init__(self, port: int) -> None:
        import urllib3

        self.pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=2)

    def count(self) -> int:
        return int(self.pool.request("GET", "/count", retries=False).data)

    def arrivals(self) -> list[tuple[str, str, float]]:
        return [tuple(a) for a in json.loads(self.pool.request("GET", "/arrivals", retries=False).data)]  # type: ignore[misc]


# --- measurements ----------------------------------------------------------------------------------------------


def bare_post_rate(port: int, n: int) -> float:
    """The limit of (a): 10 threads, each its own keep-alive connection to one endpoint path, no signing."""
    import urllib3

    body = json.dumps({"type": "ledger.topup_posted", "data": {"n": 1}}).encode()
    per = n // ENDPOINTS

    def post_many(index: int) -> None:
        pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1)
        for i in range(per):
            pool.urlopen("POST", f"/e{index}", body=body, headers={"webhook-id": f"bare-{index}-{i}"}, retries=False)

    started = time.perf_counter()
    with ThreadPoolExecutor(ENDPOINTS) as pool:
        list(pool.map(post_many, range(ENDPOINTS)))
    return per * ENDPOINTS / (time.perf_counter() - started)


def make_partner(port: int, *, slow: bool) -> int:
    from apps.partners.models import Partner
    from apps.partners.tests.webhook_helpers import endpoint_for

    partner = Partner.objects.create(name=f"bench-webhooks-{time.time_ns()}")
    for i in range(ENDPOINTS):
        endpoint_for(partner.pk, f"http://127.0.0.1:{port}/e{i}", types=["ledger.topup_posted"])
    if slow:
        endpoint_for(partner.pk, f"http://127.0.0.1:{port}/slow", types=["ledger.topup_posted"])
    return partner.pk


def cleanup() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM partners_webhookattempt")
        cursor.execute("DELETE FROM partners_webhookdelivery")
        cursor.execute("DELETE FROM partners_webhooksecret")
        cursor.execute("DELETE FROM partners_webhookendpoint")
        cursor.execute("DELETE FROM partners_event")
        cursor.execute("DELETE FROM partners_eventsequence")
        cursor.execute("DELETE FROM partners_partner WHERE name LIKE 'bench-webhooks-%%'")
        cursor.execute("DELETE FROM outbox_outboxmessage")
        cursor.execute("VACUUM ANALYZE partners_webhookdelivery")
        cursor.execute("VACUUM ANALYZE partners_event")


def throughput_run(port: int, events: int, *, slow: bool) -> float:
    """Deliveries/s to the 10 healthy endpoints: commit of `events` events → all 10 × events received."""
    from django.db import transaction

    from apps.partners.webhooks.contracts import EventDraft
    from apps.partners.webhooks.events import events_sequence, partner_events_record

    cleanup()
    receiver = ReceiverClient(port)
    receiver.arrivals()
    partner_id = make_partner(port, slow=slow)
    dispatcher = start([sys.executable, "manage.py", "webhook_dispatch", "--threads", str(ENDPOINTS + 1)])
    try:
        time.sleep(3)  # the dispatcher is up and idle (LISTENing)
        with transaction.atomic():
            partner_events_record(
                [
                    EventDraft(
                        type="ledger.topup_posted",
                        partner_id=partner_id,
                        employer_id=None,
                        object_type="bench",
                        object_id=str(i),
                        data={"n": i},
                    )
                    for i in range(events)
                ]
            )
        started = time.perf_counter()
        events_sequence(limit=events)  # positions + deliveries, one commit, NOTIFY wakes the dispatcher
        expected = events * ENDPOINTS
        healthy = 0
        deadline = time.monotonic() + 120
        while healthy < expected and time.monotonic() < deadline:
            time.sleep(0.02)
            healthy = receiver.count()  # the slow endpoint's request counts only after 30 s, never in a run
        elapsed = time.perf_counter() - started
        if healthy < expected:
            raise RuntimeError(f"only {healthy}/{expected} delivered")
        return expected / elapsed
    finally:
        stop(dispatcher)


def latency_round(port: int, partner_id: int, *, rate: int, seconds: float) -> tuple[list[float], list[float]]:
    """One relay-limit phase then one webhook phase at `rate`; returns (relay ms, webhook ms)."""
    import redis
    from django.conf import settings
    from django.db import transaction

    from apps.outbox.bench_consumer import LATENCY_KEY
    from apps.outbox.contracts import OutboxTopic
    from apps.outbox.services import outbox_enqueue
    from apps.partners.webhooks.contracts import EventDraft
    from apps.partners.webhooks.events import partner_events_record
    from apps.partners.webhooks.models import Event

    client = redis.Redis.from_url(settings.REDIS_URL)
    receiver = ReceiverClient(port)
    total = int(rate * seconds)

    def paced(action: Any) -> None:
        started = time.perf_counter()
        for i in range(total):
            pause = started + i / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            action(i)

    client.delete(LATENCY_KEY)

    def relay_event(i: int) -> None:
        with transaction.atomic():
            outbox_enqueue(topic=OutboxTopic.BENCH, payload={"n": i})

    paced(relay_event)
    with contextlib.suppress(RuntimeError):
        wait_for(lambda: client.llen(LATENCY_KEY) >= total, seconds=30, what="relay deliveries")
    relay_ms = [float(x) * 1000 for x in client.lrange(LATENCY_KEY, 0, -1)]

    receiver.arrivals()
    first_id = (Event.objects.order_by("-id").values_list("id", flat=True).first() or 0) + 1

    def webhook_event(i: int) -> None:
        with transaction.atomic():
            partner_events_record(
                [
                    EventDraft(
                        type="ledger.topup_posted",
                        partner_id=partner_id,
                        employer_id=None,
                        object_type="bench-latency",
                        object_id=f"{time.time_ns()}",
                        data={"n": i},
                    )
                ]
            )

    paced(webhook_event)
    arrivals: list[tuple[str, str, float]] = []
    deadline = time.monotonic() + 60
    while len(arrivals) < total * ENDPOINTS and time.monotonic() < deadline:
        time.sleep(0.2)
        arrivals += receiver.arrivals()
    created = {
        public_id: at.timestamp()
        for public_id, at in Event.objects.filter(id__gte=first_id).values_list("public_id", "created_at")
    }
    webhook_ms = [(t - created[i]) * 1000 for i, _path, t in arrivals if i in created]
    return relay_ms, webhook_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=500, help="events per throughput run (× 10 endpoints)")
    parser.add_argument("--runs", type=int, default=5, help="throughput runs each way (median; at least 5)")
    parser.add_argument("--latency-only", action="store_true", help="measure (c) only (for iterating)")
    parser.add_argument("--rate", type=int, default=100, help="events/s for the latency rounds")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each latency phase")
    parser.add_argument("--repeat", type=int, default=5, help="latency rounds (worst p99 reported)")
    parser.add_argument("--port", type=int, default=0, help="receiver port (default: a free one)")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.runs < 5:
        parser.error("--runs must be at least 5: the timeout comparison is the median of 5 runs each way")
    check_services()
    import django

    django.setup()
    from django.core.management import call_command

    from bench._common import free_port

    call_command("migrate", verbosity=0)
    port = args.port or free_port()
    receiver_process = start([sys.executable, str(Path(__file__).resolve()), "--serve", str(port)])
    processes: list[subprocess.Popen[bytes]] = [receiver_process]
    print(f"Webhook benchmark — {os.cpu_count()} cores, receiver on :{port}", flush=True)
    try:
        wait_for(lambda: _up(port), seconds=20, what="the receiver")
        bare = statistics.median(bare_post_rate(port, 5000) for _ in range(3))
        ReceiverClient(port).arrivals()
        print(f"  limit: bare POSTs to the receiver, 10 threads: {bare:,.0f}/s", flush=True)
        healthy_runs: list[float] = []
        slow_runs: list[float] = []
        for _ in range(0 if args.latency_only else args.runs):
            healthy_runs.append(throughput_run(port, args.events, slow=False))
            slow_runs.append(throughput_run(port, args.events, slow=True))
            print(
                f"  throughput: {healthy_runs[-1]:,.0f}/s; with a timing-out endpoint {slow_runs[-1]:,.0f}/s",
                flush=True,
            )
        cleanup()

        # (c) the real path: relay process + Celery worker (sequencer) + dispatcher process.

        from config.celery import app

        partner_id = make_partner(port, slow=False)
        env = {**os.environ, "KEEL_BENCH": "1"}
        name = f"bench-webhooks-{os.getpid()}@%h"
        worker = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "webhooks,bench", "-P", "threads"]
        worker += [
            "-c",
            "2",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-l",
            "WARNING",
            "-n",
            name,
        ]
        processes.append(start(worker, env))
        processes.append(
            start([sys.executable, "manage.py", "outbox_relay", "--idle-seconds", "1", "--linger-ms", "5"], env)
        )
        processes.append(start([sys.executable, "manage.py", "webhook_dispatch", "--threads", str(ENDPOINTS)], env))
        hostname = name.replace("%h", os.uname().nodename)
        wait_for(lambda: bool(app.control.ping([hostname], timeout=0.5)), seconds=60, what="the Celery worker")
        latency_round(port, partner_id, rate=args.rate, seconds=1.0)  # warm-up
        rounds = []
        for n in range(args.repeat):
            relay_ms, webhook_ms = latency_round(port, partner_id, rate=args.rate, seconds=args.seconds)
            rounds.append((relay_ms, webhook_ms))
            print(
                f"  latency round {n + 1}: relay p99 {percentile(relay_ms, 99):.1f} ms ({len(relay_ms)}), "
                f"webhooks p50 {percentile(webhook_ms, 50):.1f} / p99 {percentile(webhook_ms, 99):.1f} ms "
                f"({len(webhook_ms)} deliveries), {latency_ratio(relay_ms, webhook_ms):.2f}× relay p99",
                flush=True,
            )
    finally:
        for process in reversed(processes):
            stop(process)
        with contextlib.suppress(Exception):
            cleanup()

    healthy = statistics.median(healthy_runs) if healthy_runs else float("nan")
    slowed = statistics.median(slow_runs) if slow_runs else float("nan")
    # Each round is judged against the relay measured alongside it; the worst ratio's round is reported.
    worst_relay, worst_p50, worst_p99, worst_ratio = worst_latency_round(rounds)
    drop = 1 - slowed / healthy
    rows = [
        ("limit: bare POSTs, 10 threads, keep-alive", f"{bare:,.0f}/s", "", ""),
        (
            f"deliveries, 1 dispatcher process, 10 endpoints (median of {args.runs})",
            f"{healthy:,.0f}/s",
            f"{healthy / bare:.2f}× bare",
            f"≥ {TARGET_DELIVERIES:,}/s: {'met' if healthy >= TARGET_DELIVERIES else 'MISSED'}",
        ),
        (
            "  + 1 endpoint timing out (median)",
            f"{slowed:,.0f}/s",
            f"{drop * 100:+.0f}% lower",
            f"≤ 25% lower: {'met' if drop <= TARGET_SLOWDOWN else 'MISSED'}",
        ),
        (
            f"limit: relay commit → consumer @ {args.rate}/s (the worst round's, of {args.repeat})",
            f"p99 {worst_relay:.1f} ms",
            "",
            "",
        ),
        (
            f"commit → delivered @ {args.rate} events/s × 10 endpoints (worst round's ratio, of {args.repeat})",
            f"p50 {worst_p50:.1f} / p99 {worst_p99:.1f} ms",
            f"{worst_ratio:.2f}× relay p99",
            f"≤ 3× relay p99: {'met' if worst_ratio <= TARGET_LATENCY_RATIO else 'MISSED'}",
        ),
    ]
    if args.latency_only:
        rows = [rows[0], *rows[3:]]
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    print()
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    if any("MISSED" in row[3] for row in rows):
        sys.exit(1)


def _up(port: int) -> bool:
    try:
        ReceiverClient(port).count()
        return True
    except Exception:
        return False


if __name__ == "__main__":
    main()
