"""Request cost that machine noise cannot move (issue 15, SPEC §12): CPU instructions and CPU time per request.

Counted in the web process only — the Django ASGI application (`config.asgi`, what production serves, ADR 0050)
called in-process as uvicorn calls it (`--server wsgi`: `config.wsgi` as gunicorn calls it),
so the PostgreSQL and Redis servers' work is not counted (they are other processes) — for:

    limit  bare JSON view      GET  /bench/bare-json          (plain Django view, whole middleware stack)
    limit  bare DRF create     POST /api/v1/bench/bare-create (same middleware, API-key auth, scope, rate
                                                               limiter; one INSERT … COMMIT) — THE limit
    POST /api/v1/endorsements                                 target ≤ 2.5× the limit
    POST /api/v1/loan-applications                            target ≤ 2×
    GET  /api/v1/endorsements/{id}                            target ≤ 1.5×

Instructions: the measuring child runs under `valgrind --tool=callgrind --instr-atstart=no`; around each case it
starts instrumentation, zeroes the counters, sends `--requests` requests and dumps (client requests compiled
from bench/cgmark.c), so start-up and warm-up are not counted. Instruction counts repeat within a fraction of a
percent whatever else the machine does. CPU time: the same child without valgrind, `time.process_time()` over
`--rounds` rounds of `--requests` requests per case (median and worst). Both are printed as ratios to the limit.
The limit endpoints are mounted only by `config.settings.bench` (bench/limits.py), never in the shipped API.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/keel_bench_request_cost REDIS_URL=redis://127.0.0.1:6379/14 \
        .venv/bin/python bench/request_cost.py [--requests 40] [--rounds 5] [--principal-cache on|off]

Needs valgrind and gcc (Debian: `apt-get install valgrind gcc`). Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from _common import ROOT, bench_world, django_ready, set_bench_pan_keys, setup_environment

os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.bench"
# As production runs (config.settings.production, ADR 0048): no Celery nudge on commit — the relay and webhook
# processes are woken by PostgreSQL NOTIFY, which the triggers queue in the same transactions here too.
os.environ["OUTBOX_NUDGE_ON_COMMIT"] = "false"
os.environ["WEBHOOKS_NUDGE_ON_COMMIT"] = "false"
set_bench_pan_keys()  # DEBUG is off: PAN keys must be set explicitly (bench-only keys)
setup_environment()

LIMIT = "bare DRF create (limit)"
CASES = (
    "bare JSON view",
    LIMIT,
    "POST /endorsements",
    "POST /loan-applications",
    "GET /endorsements/{id}",
)
TARGETS = {"POST /endorsements": 2.5, "POST /loan-applications": 2.0, "GET /endorsements/{id}": 1.5}
WARMUP = 15


# --- the world (parent, natively) ----------------------------------------------------------------------------
def setup_world() -> dict[str, Any]:
    """The bench's partner, employer and policy (bench/_common.py), and the limit's table."""
    from django.db import connection

    from bench.limits import CREATE_TABLE_SQL

    key, employer, policy = bench_world("cost")
    with connection.cursor() as cursor:
        cursor.execute(CREATE_TABLE_SQL)
    return {"key": key, "employer": employer, "policy": policy, "run": uuid.uuid4().hex[:8]}


# --- the measuring child -------------------------------------------------------------------------------------
class InProcessASGIClient:
    """Calls the ASGI application of `config.asgi` in this process the way uvicorn does (scope, receive, send on
    one event loop): the server production runs (ADR 0050), with Django's per-request thread and every sync hop."""

    def __init__(self, key: str) -> None:
        import asyncio

        from config.asgi import application

        self.application = application
        self.auth = f"Api-Key {key}".encode()
        self.loop = asyncio.new_event_loop()

    def request(self, method: str, path: str, body: object | None = None) -> tuple[int, bytes]:
        import asyncio

        data = json.dumps(body).encode() if body is not None else b""
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"127.0.0.1"),
                (b"authorization", self.auth),
                (b"accept", b"application/json"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8000),
        }
        incoming = [{"type": "http.request", "body": data, "more_body": False}]
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if incoming:
                return incoming.pop()
            await asyncio.Event().wait()  # no disconnect: Django stops listening once the response is sent
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        self.loop.run_until_complete(self.application(scope, receive, send))
        return int(sent[0]["status"]), b"".join(m.get("body", b"") for m in sent[1:])


class InProcessClient:
    """Calls the WSGI application in this process the way gunicorn does (environ in, iterable out)."""

    def __init__(self, key: str) -> None:
        from config.wsgi import application

        self.application = application
        self.auth = f"Api-Key {key}"

    def request(self, method: str, path: str, body: object | None = None) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else b""
        environ = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_AUTHORIZATION": self.auth,
            "HTTP_ACCEPT": "application/json",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(data)),
            "wsgi.input": io.BytesIO(data),
            "wsgi.errors": sys.stderr,
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        started: list[str] = []
        result = self.application(environ, lambda status, headers, exc_info=None: started.append(status))
        try:
            payload = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return int(started[0][:3]), payload


def endorsement_body(world: dict[str, Any], code: str) -> dict[str, Any]:
    return {
        "employer": world["employer"],
        "policy": world["policy"],
        "type": "addition",
        "effective_date": date.today().isoformat(),
        "employee": {
            "employee_code": code,
            "first_name": "Cost",
            "last_name": "Member",
            "date_of_birth": "1990-01-01",
            "gender": "male",
            "email": f"{code.lower()}@cost.example",
        },
    }


def loan_body(n: int, salt: int) -> dict[str, Any]:
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    high, low = divmod(n, 9999)
    pan = "C" + letters[salt % 26] + letters[(salt // 26) % 26] + letters[high % 26] + letters[(high // 26) % 26]
    return {
        "pan_number": f"{pan}{low + 1:04d}{letters[n % 26]}",
        "first_name": "Cost",
        "last_name": "Applicant",
        "date_of_birth": "1988-03-14",
        "email": f"cost{n}@example.in",
        "phone_number": "9876543210",
        "monthly_income": "90000.00",
        "requested_amount": "500000.00",
        "loan_type": "PERSONAL",
        "consent": True,
    }


Sender = Callable[[int], tuple[int, bytes]]


def case_senders(client: InProcessClient, world: dict[str, Any]) -> dict[str, tuple[Sender, int]]:
    """Each case: a function sending request number n, and the status it must answer."""
    run = world["run"]
    salt = int(hashlib.sha256(run.encode()).hexdigest()[:6], 16)
    status, created = client.request("POST", "/api/v1/endorsements", endorsement_body(world, f"G{run}"))
    assert status == 202, (status, created[:300])
    endorsement_id = json.loads(created)["id"]
    return {
        "bare JSON view": (lambda n: client.request("GET", "/bench/bare-json"), 200),
        LIMIT: (lambda n: client.request("POST", "/api/v1/bench/bare-create", {"note": f"n{n}"}), 201),
        "POST /endorsements": (
            lambda n: client.request("POST", "/api/v1/endorsements", endorsement_body(world, f"E{run}{n}")),
            202,
        ),
        "POST /loan-applications": (
            lambda n: client.request("POST", "/api/v1/loan-applications", loan_body(n, salt)),
            202,
        ),
        "GET /endorsements/{id}": (lambda n: client.request("GET", f"/api/v1/endorsements/{endorsement_id}"), 200),
    }


def send(sender: Sender, expected: int, numbers: range, case: str) -> None:
    for n in numbers:
        status, payload = sender(n)
        if status != expected:
            sys.exit(f"{case}: request {n} answered {status}, expected {expected}: {payload[:300]!r}")


def child(mode: str, world: dict[str, Any], requests: int, rounds: int, marks: str, server: str) -> None:
    import django

    django.setup()
    if os.environ.get("API_PRINCIPAL_CACHE_SECONDS") != "0":
        # Steady state of the principal cache (ADR 0054): callgrind slows this process ~50×, so its 5 s would
        # expire every few requests here, where production at 100 req/s re-reads a key once in ~500 requests.
        # Its clock is frozen in the child, so every measured request is a hit; `--principal-cache off` measures
        # the miss (every request reads the key, as before the cache).
        from apps.partners.principal_cache import principal_cache

        principal_cache.clock = lambda: 0.0
    client = InProcessASGIClient(world["key"]) if server == "asgi" else InProcessClient(world["key"])
    senders = case_senders(client, {**world, "run": f"{world['run']}{mode[0]}"})  # each child its own members
    cg = ctypes.CDLL(marks) if mode == "instructions" else None
    next_number = 0
    results: dict[str, list[float]] = {}
    for case in CASES:
        sender, expected = senders[case]
        send(sender, expected, range(next_number, next_number + WARMUP), case)
        next_number += WARMUP
        if cg is not None:
            cg.cg_start()
            cg.cg_zero()
            send(sender, expected, range(next_number, next_number + requests), case)
            cg.cg_dump(case.encode())
            cg.cg_stop()
            next_number += requests
            continue
        per_request: list[float] = []
        for _ in range(rounds):
            started = time.process_time()
            send(sender, expected, range(next_number, next_number + requests), case)
            per_request.append((time.process_time() - started) / requests * 1e6)
            next_number += requests
        results[case] = per_request
    if mode == "cpu":
        print(json.dumps(results))


# --- the parent: run the child twice, read the counts, print the ratios ---------------------------------------
def compile_marks(folder: Path) -> Path:
    library = folder / "cgmark.so"
    command = ["gcc", "-O2", "-shared", "-fPIC", "-o", str(library), str(ROOT / "bench" / "cgmark.c")]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"compiling bench/cgmark.c failed (needs gcc and valgrind's headers):\n{result.stderr}")
    return library


def read_dumps(folder: Path) -> dict[str, int]:
    """Callgrind writes one file per dump: `desc: Trigger: Client Request: <label>` and `summary:`/`totals:`."""
    counts: dict[str, int] = {}
    for dump in folder.glob("callgrind.out*"):
        label = total = None
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith("desc: Trigger: Client Request: "):
                label = line.removeprefix("desc: Trigger: Client Request: ").strip()
            elif line.startswith(("summary:", "totals:")):
                total = int(line.split()[1])
        if label in CASES and total is not None:
            counts[label] = total
    return counts


def run_child(mode: str, world: dict[str, Any], args: argparse.Namespace, folder: Path, marks: Path) -> str:
    command = [sys.executable, str(Path(__file__).resolve()), "--child", mode, "--world", json.dumps(world)]
    command += ["--requests", str(args.requests), "--rounds", str(args.rounds), "--marks", str(marks)]
    command += ["--server", args.server]
    if mode == "instructions":
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={folder}/callgrind.out.%p",
            *command,
        ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=os.environ.copy())
    if result.returncode != 0:
        sys.exit(f"the {mode} child failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40, help="measured requests per case (and per CPU round)")
    parser.add_argument("--rounds", type=int, default=5, help="CPU-time rounds per case")
    parser.add_argument(
        "--principal-cache",
        choices=["on", "off"],
        default="on",
        help="off: API_PRINCIPAL_CACHE_SECONDS=0, every request reads its key (the cost before ADR 0054)",
    )
    parser.add_argument(
        "--server",
        choices=["asgi", "wsgi"],
        default="asgi",
        help="asgi: config.asgi as uvicorn calls it (what `make run` and the image serve, ADR 0050); wsgi: config.wsgi",
    )
    parser.add_argument("--child", choices=["cpu", "instructions"], help=argparse.SUPPRESS)
    parser.add_argument("--world", help=argparse.SUPPRESS)
    parser.add_argument("--marks", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, json.loads(args.world), args.requests, args.rounds, args.marks, args.server)
        return
    if args.principal_cache == "off":
        os.environ["API_PRINCIPAL_CACHE_SECONDS"] = "0"  # inherited by both children
    if subprocess.run(["valgrind", "--version"], capture_output=True).returncode != 0:
        sys.exit("valgrind is needed (Debian: apt-get install valgrind)")
    django_ready()
    world = setup_world()
    with tempfile.TemporaryDirectory(prefix="keel-request-cost-") as tmp:
        folder = Path(tmp)
        marks = compile_marks(folder)
        cpu = json.loads(run_child("cpu", world, args, folder, marks).strip().splitlines()[-1])
        started = time.monotonic()
        run_child("instructions", world, args, folder, marks)
        instructions = {case: count / args.requests for case, count in read_dumps(folder).items()}
        valgrind_seconds = time.monotonic() - started
    missing = [case for case in CASES if case not in instructions]
    if missing:
        sys.exit(f"no callgrind dump for {missing}")
    limit_ir = instructions[LIMIT]
    limit_cpu = statistics.median(cpu[LIMIT])
    print(
        f"\nRequest cost per request, web process only (in-process {args.server.upper()}; PostgreSQL/Redis servers "
        "not counted)"
    )
    print(f"  machine: {os.cpu_count()} cores; {args.requests} measured requests per case after {WARMUP} warm-up;")
    print(f"  CPU time: median / worst of {args.rounds} rounds; callgrind run took {valgrind_seconds:.0f} s")
    print(f"  principal cache (ADR 0054): {args.principal_cache}")
    print(f"  {'case':<28} {'instructions':>14} {'× limit':>8} {'CPU µs med':>11} {'worst':>8} {'× limit':>8}  target")
    failed = []
    for case in CASES:
        ir = instructions[case]
        med, worst = statistics.median(cpu[case]), max(cpu[case])
        target = TARGETS.get(case)
        ratio = ir / limit_ir
        verdict = ""
        if target is not None:
            ok = ratio <= target
            verdict = f"≤ {target}× {'met' if ok else 'MISSED'}"
            if not ok:
                failed.append(case)
        print(
            f"  {case:<28} {ir:>14,.0f} {ratio:>7.2f}× {med:>11.0f} {worst:>8.0f} {med / limit_cpu:>7.2f}×  {verdict}"
        )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
