"""What an open live stream costs the process that serves it (issue 16, ADR 0069). Needs PostgreSQL and Redis:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/keel_bench_stream_footprint REDIS_URL=redis://127.0.0.1:6379/7 \\
        .venv/bin/python bench/stream_footprint.py [--streams 500]

The ASGI app as `config.asgi` builds it, under uvicorn in a thread of this process; `--streams` SSE clients in a
process of their own open streams and stay idle. Measured in this process, each way in the same run:

- objects the garbage collector tracks, per open stream, and threads, per open stream;
- the time of a full collection (`gc.collect()`, median of 5) with the streams open — the pause every API request
  of the process may meet.

The limit is the same streams served **inside Django's handler** (the view's body streamed by Django to the end:
its request, tasks and per-request thread alive for the stream's life — the way before ADR 0069); the figure is
the streams **handed over** to the ASGI entry after Django finished the opening. Counts, not latencies: they do not
move with the machine's load. Target: the handed-over stream tracks fewer objects and makes a shorter full collection
than the limit (threads are printed: since ADR 0071 neither way keeps a thread per stream).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench._common import setup_environment  # noqa: E402

setup_environment()


# Threads per stream are printed, not judged: since ADR 0071 no request has a thread of its own, inside Django or
# not (before it, each stream inside Django kept one: 1.01 per stream on 2026-12-02).
JUDGED = ("objects per stream", "full collection, ms")


def run_clients(port: int, key: str, count: int) -> None:
    """The client process: open `count` streams, print `open` once each has read `: live`, hold them until stdin
    closes."""
    import asyncio

    async def one(ready: list[int]) -> Any:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /api/v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Api-Key {key}\r\n\r\n".encode()
        )
        await writer.drain()
        seen = b""
        while b": live" not in seen:
            chunk = await reader.read(4096)
            if not chunk:
                raise SystemExit(f"stream closed before it was live: {seen[:300]!r}")
            seen += chunk
        ready.append(1)
        return writer

    async def main() -> None:
        ready: list[int] = []
        writers = []
        for start in range(0, count, 50):  # 50 at a time: the server's listen backlog and the opening's thread pool
            writers += await asyncio.gather(*(one(ready) for _ in range(start, min(count, start + 50))))
        print("open", len(ready), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for writer in writers:
            writer.close()

    asyncio.run(main())


def full_collection_ms() -> float:
    times = []
    for _ in range(5):
        started = time.perf_counter()
        gc.collect()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def measure(port: int, key: str, count: int) -> dict[str, float]:
    from apps.live import hub as hub_module

    gc.collect()
    objects, threads, idle_gc = len(gc.get_objects()), threading.active_count(), full_collection_ms()
    clients = subprocess.Popen(
        [sys.executable, __file__, "--clients-of", str(port), key, str(count)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    line = clients.stdout.readline() if clients.stdout else ""
    if not line.startswith("open"):
        raise SystemExit(f"bench/stream_footprint.py: the clients did not open their streams ({line!r})")
    deadline = time.monotonic() + 30
    while hub_module.hub.subscriber_count() < count and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # the heartbeat ticker and the credential sweep have run
    gc.collect()
    result = {
        "objects per stream": (len(gc.get_objects()) - objects) / count,
        "threads per stream": (threading.active_count() - threads) / count,
        "full collection, ms": full_collection_ms(),
        "full collection without streams, ms": idle_gc,
    }
    if clients.stdin:
        clients.stdin.close()
    clients.wait(30)
    return result


def measure_mode(mode: str, count: int) -> None:
    """One way (`inside` or `handed`), in a process of its own so neither way's leftovers count in the other's:
    prints its measures as one JSON line."""
    import json
    import logging

    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    logging.getLogger("django_structlog").setLevel(logging.ERROR)  # 500 "streaming_cancelled" lines at the end
    from apps.common.actors import Actor
    from apps.common.testing import uvicorn_in_thread
    from apps.live import streaming
    from apps.partners.contracts import Scope
    from apps.partners.models import Partner
    from apps.partners.services import api_key_create, partner_create
    from config.asgi import application

    actor = Actor.system("bench stream_footprint")
    partner = partner_create(name=f"bench-footprint-{uuid.uuid4().hex[:6]}", actor=actor)
    Partner.objects.filter(pk=partner.pk).update(
        rate_limit_per_minute=1_000_000, rate_limit_per_hour=1_000_000, rate_limit_per_day=1_000_000
    )
    _, key = api_key_create(
        partner=partner, name="bench stream", scopes=[Scope.ENDORSEMENTS_READ], all_employers=True, actor=actor
    )
    if mode == "inside":
        streaming.continuation_slot = lambda scope: None  # the limit: the whole body streamed inside Django
    with uvicorn_in_thread(application, backlog=4096) as port:
        print(json.dumps(measure(port, key, count)), flush=True)


def main() -> None:
    import json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients-of", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--measure", choices=["inside", "handed"], help=argparse.SUPPRESS)
    parser.add_argument("--streams", type=int, default=500)
    args = parser.parse_args()
    if args.clients_of:
        run_clients(int(args.clients_of[0]), args.clients_of[1], int(args.clients_of[2]))
        return
    if not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get("REDIS_URL"):
        sys.exit("bench/stream_footprint.py: set DATABASE_URL=postgres://… and REDIS_URL=redis://…")
    if args.measure:
        measure_mode(args.measure, args.streams)
        return
    print(f"Stream footprint — {args.streams} idle streams, one ASGI app (config.asgi) under uvicorn, each way in a")
    print("process of its own")
    results = {}
    for mode in ("inside", "handed"):
        out = subprocess.run(
            [sys.executable, __file__, "--measure", mode, "--streams", str(args.streams)],
            capture_output=True,
            text=True,
            check=False,
        )
        lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
        if out.returncode or not lines:
            sys.exit(f"bench/stream_footprint.py: the {mode} run failed:\n{out.stdout[-2000:]}{out.stderr[-4000:]}")
        results[mode] = json.loads(lines[-1])
    inside, after = results["inside"], results["handed"]
    print(f"  {'':38} {'inside Django (limit)':>22} {'handed over':>12} {'ratio':>7}")
    met = True
    for name in inside:
        ratio = after[name] / inside[name] if inside[name] else float("nan")
        print(f"  {name:38} {inside[name]:22.2f} {after[name]:12.2f} {ratio:7.2f}")
        if name in JUDGED:
            met = met and after[name] < inside[name]
    print(f"  target: {' and '.join(JUDGED)} below the limit's: {'met' if met else 'MISSED'}")
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
