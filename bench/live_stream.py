"""Live event stream benchmark (issue 16, ADR 0050). Needs PostgreSQL and Redis:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/keel_bench_live_stream REDIS_URL=redis://127.0.0.1:6379/7 \\
        .venv/bin/python bench/live_stream.py [--clients 500] [--partners 50] [--rate 100] [--seconds 5] \\
        [--repeat 3] [--runs 5] [--posts 200]

One ASGI process (`uvicorn config.asgi:application`, one worker) serves the API and the stream. `--clients` SSE
clients (one asyncio process of their own) are spread over `--partners` partners, so each event reaches
`clients / partners` of them. Each figure comes with its limit, measured in the same run:

(a) commit → received latency at `--rate` events/s (each event its own committed transaction, for a random
    partner), through the real path: `Event` row committed → `webhook_dispatch` (the sequencer positions it and
    NOTIFYs) → the ASGI process's reader → every subscribed stream → client; limit: the outbox relay's
    commit → consumer-start latency at the same rate (`outbox_relay` + a Celery worker running the `bench.outbox`
    consumer), measured alternately. `--repeat` rounds, each judged against the relay of the same round (stream p99
    ÷ relay p99); the worst round's ratio is reported. Target: stream p99 ≤ 2× relay p99.
(b) API `POST /api/v1/employers` p99 (`--posts` sequential requests) with and without the clients connected
    and idle, `--runs` interleaved runs each, median. Target: within 1.25×.

Use a database of its own (created if missing). Everything it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import free_port, setup_environment, worst_latency_round  # noqa: E402
from bench._common import percentile as _percentile  # noqa: E402

setup_environment()
os.environ["WEBHOOKS_NUDGE_ON_COMMIT"] = "false"

TARGET_LATENCY_RATIO = 2.0
TARGET_API_RATIO = 1.25
ID_LINE = re.compile(rb"id: (evt_[A-Za-z0-9_-]+)\n")


def percentile(values: list[float], p: float) -> float:
    """NaN for no values (a phase that received nothing shows as such instead of crashing the report)."""
    return _percentile(values, p) if values else float("nan")


def fail(message: str) -> None:
    sys.exit(f"bench/live_stream.py: {message}")


# --- the SSE clients (their own process: `bench/live_stream.py --clients-of PORT KEYS_FILE`) ----------------


def run_clients(port: int, keys_file: str, out_file: str) -> None:
    """Open one stream per key in `keys_file` (a JSON list), record (event id, arrival time) of every event until
    SIGTERM, then write them to `out_file` as JSON. Prints `connected N` once every stream got its first bytes."""
    keys: list[str] = json.loads(Path(keys_file).read_text())
    arrivals: list[tuple[str, float]] = []
    stop = asyncio.Event()

    async def client(key: str, ready: asyncio.Event, opened: list[int]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /api/v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Api-Key {key}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200 " not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(head.decode(errors="replace"))
        buffer = b""
        while b": live" not in buffer:  # the server has replayed the table and follows new events
            chunk = await reader.read(65536)
            if not chunk:
                return
            buffer += chunk
        buffer = buffer[buffer.rfind(b"\n") + 1 :]
        opened[0] += 1
        if opened[0] == len(keys):
            ready.set()
        while not stop.is_set():
            chunk = await reader.read(65536)
            if not chunk:
                return
            now = time.time()
            buffer += chunk
            for match in ID_LINE.finditer(buffer):
                arrivals.append((match.group(1).decode(), now))
            buffer = buffer[buffer.rfind(b"\n") + 1 :]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        ready, opened = asyncio.Event(), [0]
        tasks = []
        for key in keys:
            tasks.append(asyncio.create_task(client(key, ready, opened)))
            await asyncio.sleep(0.002)  # do not open 500 connections in one burst
        await asyncio.wait_for(ready.wait(), 120)
        print(f"connected {opened[0]}", flush=True)
        await stop.wait()
        for task in tasks:
            task.cancel()
        Path(out_file).write_text(json.dumps(arrivals))

    asyncio.run(main())


# --- the driver ------------------------------------------------------------------------------------------------


def start(command: list[str], env: dict[str, str] | None = None, *, stdout: Any = subprocess.DEVNULL) -> Any:
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=env or os.environ.copy(),
        stdout=stdout,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop(process: Any) -> None:
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


def _up(port: int) -> bool:
    import urllib.request

    try:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1).status == 200
    except OSError:
        return False


def setup_partners(count: int, clients: int) -> tuple[list[int], list[str], str]:
    """`count` partners, each with a platform API key per client (endorsements:read) — returns (partner ids,
    stream keys, one writer key for the API POSTs)."""
    from apps.common.actors import Actor
    from apps.partners.contracts import Scope
    from apps.partners.models import Partner
    from apps.partners.services import api_key_create, partner_create

    actor = Actor.system("bench live_stream")
    run = uuid.uuid4().hex[:6]
    partners = [partner_create(name=f"bench-live-{run}-{n}", actor=actor) for n in range(count)]
    Partner.objects.filter(pk__in=[p.pk for p in partners]).update(
        rate_limit_per_minute=1_000_000, rate_limit_per_hour=1_000_000, rate_limit_per_day=1_000_000
    )
    keys = []
    for n in range(clients):
        partner = partners[n % count]
        _, plaintext = api_key_create(
            partner=partner, name="bench stream", scopes=[Scope.ENDORSEMENTS_READ], all_employers=True, actor=actor
        )
        keys.append(plaintext)
    _, writer = api_key_create(
        partner=partners[0],
        name="bench writer",
        scopes=[Scope.EMPLOYERS_WRITE, Scope.EMPLOYERS_READ],
        all_employers=True,
        actor=actor,
    )
    return [p.pk for p in partners], keys, writer


def api_post_p99(port: int, key: str, posts: int) -> float:
    import urllib3

    pool = urllib3.HTTPConnectionPool("127.0.0.1", port, maxsize=1)
    times = []
    for _ in range(posts):
        ref = uuid.uuid4().hex[:16]
        body = json.dumps({"name": f"Bench {ref}", "external_ref": f"B-{ref}"}).encode()
        started = time.perf_counter()
        response = pool.request(
            "POST",
            "/api/v1/employers",
            body=body,
            headers={"Authorization": f"Api-Key {key}", "Content-Type": "application/json", "Idempotency-Key": ref},
        )
        times.append((time.perf_counter() - started) * 1000)
        if response.status != 201:
            fail(f"POST /api/v1/employers answered {response.status}: {response.data[:300]!r}")
    return percentile(times, 99)


def paced(rate: int, total: int, action: Any) -> None:
    started = time.perf_counter()
    for i in range(total):
        pause = started + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        action(i)


def relay_round(rate: int, seconds: float) -> list[float]:
    import redis
    from django.conf import settings
    from django.db import transaction

    from apps.outbox.bench_consumer import LATENCY_KEY
    from apps.outbox.contracts import OutboxTopic
    from apps.outbox.services import outbox_enqueue

    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(LATENCY_KEY)
    total = int(rate * seconds)

    def relay_event(i: int) -> None:
        with transaction.atomic():
            outbox_enqueue(topic=OutboxTopic.BENCH, payload={"n": i})

    paced(rate, total, relay_event)
    with contextlib.suppress(RuntimeError):
        wait_for(lambda: client.llen(LATENCY_KEY) >= total, seconds=30, what="relay deliveries")
    return [float(x) * 1000 for x in client.lrange(LATENCY_KEY, 0, -1)]


def stream_round(partner_ids: list[int], rate: int, seconds: float) -> list[str]:
    """Commit `rate × seconds` events, each for a random partner; returns their public ids."""
    from django.db import transaction

    from apps.partners.webhooks.contracts import EventDraft
    from apps.partners.webhooks.events import partner_events_record

    ids: list[str] = []

    def event(i: int) -> None:
        with transaction.atomic():
            (row,) = partner_events_record(
                [
                    EventDraft(
                        type="endorsement.received",
                        partner_id=random.choice(partner_ids),
                        employer_id=None,
                        object_type="endorsement",  # an EventObjectType; the id marks it a bench event
                        object_id=f"bench-{time.time_ns()}",
                        data={"n": i},
                    )
                ]
            )
        ids.append(row.public_id)

    paced(rate, int(rate * seconds), event)
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients-of", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=500)
    parser.add_argument("--partners", type=int, default=50)
    parser.add_argument("--rate", type=int, default=100, help="events/s in the latency rounds")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each latency phase")
    parser.add_argument("--repeat", type=int, default=3, help="latency rounds (worst p99 reported)")
    parser.add_argument("--runs", type=int, default=5, help="API p99 runs each way (median)")
    parser.add_argument("--posts", type=int, default=500, help="sequential POSTs per API run (p99: the 5th worst)")
    parser.add_argument("--skip-api", action="store_true", help="measure only the latency rounds")
    parser.add_argument("--skip-latency", action="store_true", help="measure only the API p99 runs")
    args = parser.parse_args()
    if args.clients_of:
        run_clients(int(args.clients_of[0]), args.clients_of[1], args.clients_of[2])
        return
    if not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get("REDIS_URL"):
        fail("set DATABASE_URL=postgres://…/keel_bench_live_stream and REDIS_URL=redis://…")
    import django

    django.setup()
    from django.core.management import call_command

    from apps.partners.webhooks.models import Event
    from config.celery import app

    call_command("migrate", verbosity=0)
    partner_ids, keys, writer = setup_partners(args.partners, args.clients)
    port = free_port()
    env = {**os.environ, "KEEL_BENCH": "1"}
    keys_file = Path(f"/tmp/keel-bench-live-{os.getpid()}.keys")
    out_file = Path(f"/tmp/keel-bench-live-{os.getpid()}.out")
    keys_file.write_text(json.dumps(keys))
    processes: list[Any] = []
    print(
        f"Live stream benchmark — {os.cpu_count()} cores, ASGI on :{port}, {args.clients} clients over "
        f"{args.partners} partners (each event reaches {args.clients // args.partners})",
        flush=True,
    )
    server = ["uvicorn", "config.asgi:application", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    server += ["--lifespan", "off", "--no-access-log", "--log-level", "warning", "--timeout-graceful-shutdown", "2"]
    api_without: list[float] = []
    api_with: list[float] = []
    rounds: list[tuple[list[float], list[float]]] = []
    try:
        processes.append(start([str(ROOT / ".venv/bin/python"), "-m", *server], env))
        wait_for(lambda: _up(port), seconds=60, what="the ASGI server")
        clients_command = [sys.executable, __file__, "--clients-of", str(port), str(keys_file), str(out_file)]

        def connect_clients() -> Any:
            process = start(clients_command, env, stdout=subprocess.PIPE)
            line = process.stdout.readline().decode()
            if not line.startswith("connected"):
                fail(f"the SSE clients did not connect: {line!r}")
            return process

        # (b) API p99 without and with the clients connected (idle), interleaved.
        api_post_p99(port, writer, 20)  # warm-up
        for n in range(0 if args.skip_api else args.runs):
            api_without.append(api_post_p99(port, writer, args.posts))
            clients = connect_clients()
            time.sleep(2)
            api_with.append(api_post_p99(port, writer, args.posts))
            stop(clients)
            print(
                f"  API POST p99 run {n + 1}: {api_without[-1]:.1f} ms without, {api_with[-1]:.1f} ms with "
                f"{args.clients} streams",
                flush=True,
            )

        # (a) latency: relay + Celery worker (the limit), the sequencer (`webhook_dispatch`), the clients.
        if args.skip_latency:
            raise _SkipLatency
        name = f"bench-live-{os.getpid()}@%h"
        worker = [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "bench", "-P", "threads", "-c", "2"]
        worker += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING", "-n", name]
        processes.append(start(worker, env))
        processes.append(
            start([sys.executable, "manage.py", "outbox_relay", "--idle-seconds", "1", "--linger-ms", "5"], env)
        )
        processes.append(start([sys.executable, "manage.py", "webhook_dispatch", "--threads", "2"], env))
        hostname = name.replace("%h", os.uname().nodename)
        wait_for(lambda: bool(app.control.ping([hostname], timeout=0.5)), seconds=60, what="the Celery worker")
        clients = connect_clients()
        relay_round(args.rate, 1.0)
        stream_round(partner_ids, args.rate, 1.0)  # warm-up
        per_event = args.clients // args.partners
        all_ids: list[list[str]] = []
        for _ in range(args.repeat):
            relay_ms = relay_round(args.rate, args.seconds)
            ids = stream_round(partner_ids, args.rate, args.seconds)
            all_ids.append(ids)
            rounds.append((relay_ms, []))
        time.sleep(3)  # the last events reach their clients
        stop(clients)
        arrivals: list[tuple[str, float]] = json.loads(out_file.read_text())
        wanted = {i for ids in all_ids for i in ids}
        created = {
            public_id: at.timestamp()
            for public_id, at in Event.objects.filter(public_id__in=wanted).values_list("public_id", "created_at")
        }
        by_id: dict[str, list[float]] = {}
        for public_id, at in arrivals:
            if public_id in created:
                by_id.setdefault(public_id, []).append((at - created[public_id]) * 1000)
        for n, ids in enumerate(all_ids):
            stream_ms = [ms for i in ids for ms in by_id.get(i, [])]
            missing = len(ids) * per_event - len(stream_ms)
            rounds[n] = (rounds[n][0], stream_ms)
            print(
                f"  latency round {n + 1}: relay p99 {percentile(rounds[n][0], 99):.1f} ms, stream p50 "
                f"{percentile(stream_ms, 50):.1f} / p99 {percentile(stream_ms, 99):.1f} ms ({len(stream_ms)} "
                f"receptions, {missing} missing)",
                flush=True,
            )
    except _SkipLatency:
        pass
    finally:
        for process in reversed(processes):
            stop(process)
        keys_file.unlink(missing_ok=True)
        out_file.unlink(missing_ok=True)

    if args.skip_latency:
        _print_api(args, api_without, api_with)
        return
    worst_relay, worst_p50, worst_p99, worst_ratio = worst_latency_round(rounds)
    met = "met" if worst_ratio <= TARGET_LATENCY_RATIO else "MISSED"
    print()
    print(f"limit: relay commit → consumer @ {args.rate}/s, worst round's (of {args.repeat}): p99 {worst_relay:.1f} ms")
    print(
        f"stream commit → received @ {args.rate}/s, {args.clients} clients, worst round: p50 {worst_p50:.1f} ms, "
        f"p99 {worst_p99:.1f} ms = {worst_ratio:.2f}× its relay p99 (target ≤ {TARGET_LATENCY_RATIO}×: {met})"
    )
    if args.skip_api:
        print("API POST p99: not measured (--skip-api)")
        return
    _print_api(args, api_without, api_with)


class _SkipLatency(Exception):
    """`--skip-latency`: leave the measuring block after the API runs (its `finally` stops the processes)."""


def _print_api(args: Any, api_without: list[float], api_with: list[float]) -> None:
    without = statistics.median(api_without) if api_without else float("nan")
    with_clients = statistics.median(api_with) if api_with else float("nan")
    print(
        f"API POST p99 (median of {args.runs}): {without:.1f} ms without, {with_clients:.1f} ms with "
        f"{args.clients} idle streams = {with_clients / without:.2f}× "
        f"(target ≤ {TARGET_API_RATIO}×: {'met' if with_clients <= TARGET_API_RATIO * without else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
