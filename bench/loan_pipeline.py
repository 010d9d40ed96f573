"""Loan pipeline benchmark (SPEC §12, issue 15 parts 2–3): loan application `POST` → decided at 20 req/s, 5 times.

Starts the pipeline's processes, a local webhook receiver with one endpoint subscribed to the partner's events
(so partner events are written and delivered as in production), creates a partner and an API key, and **5 times**:
first POSTs the bare write endpoint of `bench/limits.py` (same middleware, API-key auth, scope check and rate
limiter; one `INSERT … COMMIT`) at the same rate on the same server — the run's limit — then POSTs applications
at that rate with distinct valid PANs. Nothing polls the API: once the run's POSTs are answered the bench waits
for the pipeline to drain (one count query every 0.5 s) and reads every hop's timestamps from the database.

Layouts (`--layout`):

- `production` (default): the processes of `config/Procfile` but `beat` and `key` — `web`, the two workers
  (`worker`, `loans`), `relay` and `webhooks` (`webhook_dispatch`; docker-compose's command if a Procfile has no
  such line) — started with the Procfile's own command lines, with the Celery nudges off as production has them
  (ADR 0048: the relay and the dispatcher are woken by PostgreSQL NOTIFY). `--procfile` runs another Procfile
  the same way (A/B of worker layouts).
- `single`: the former bench layout — gunicorn (gthread) and one Celery worker for every queue, the relay run
  as a task on the worker by the on-commit nudge, no relay or dispatcher process.

Figures (all from one clock: client send times and the timestamps the processes write on the same host):

- POST → decided: the client's send time → the commit of the deciding transaction (`done_at` of the
  `loan_application.scored` row, the last write of that transaction). p95 median and worst of the runs, and its
  ratio to the same run's bare-write p95; targets in the worst run: p95 ≤ 250 ms and ≤ 10× the bare write p95.
- per stage, p50 / p95 over the runs, so the biggest hop is visible: POST → committed (the submitted row's
  `created_at`, written in the request's transaction), committed → published by the relay, published →
  scoring consumed (its queue wait: → the scoring transaction's inbox row), scored → decision published,
  published → decided (its queue wait: → the decision transaction's inbox row), decided → webhook delivered.
- intake throughput: the most POSTs/s the server accepts over a few seconds, against bare `GET /health`.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/kloan_bench REDIS_URL=redis://127.0.0.1:6379/12 \
        .venv/bin/python bench/loan_pipeline.py [--layout production|single] [--rate 20] [--seconds 15] [--runs 5]

Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import (
    ROOT,
    django_ready,
    free_port,
    median_and_worst,
    percentile,
    set_bench_pan_keys,
    verdict,
)

sys.path.insert(0, str(ROOT))
# The bench URLconf: the shipped routes plus the limit endpoint (bench/limits.py).
os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings.bench"
os.environ.setdefault("DJANGO_DEBUG", "false")
os.environ.setdefault("LOG_LEVEL", "WARNING")
os.environ.setdefault("KEEL_WORKER_LOG_LEVEL", "WARNING")
set_bench_pan_keys()  # the web server and the workers must share them
# DEBUG is off: the key that seals webhook secrets at rest (ADR 0042) must be set; a bench-only one.
os.environ.setdefault(
    "WEBHOOK_SECRETS_KEY", base64.b64encode(hashlib.sha256(b"keel-bench-only:webhook-secrets").digest()).decode()
)

FINAL = {"PRE_APPROVED", "REJECTED", "MANUAL_REVIEW"}
TARGET_P95_MS = 250.0
TARGET_RATIO = 10.0
# The production layout runs the Procfile but these, and the docker-compose service of the webhook dispatcher.
PROCFILE = ROOT / "config" / "Procfile"
NOT_IN_THE_PIPELINE = ("beat", "key")
COMPOSE_WEBHOOKS_SERVICE = "webhooks"

STAGES = (
    ("POST → committed", "post_to_commit"),
    ("committed → published (relay)", "commit_to_published"),
    ("published → scoring started (queue)", "scoring_queue"),
    ("published → scored (committed)", "published_to_scored"),
    ("scored → decision published (relay)", "scored_to_published"),
    ("published → deciding started (queue)", "decision_queue"),
    ("published → decided (committed)", "published_to_decided"),
    ("decided → webhook delivered", "decided_to_webhook"),
)


def pan_for(run: int, n: int) -> str:
    """Distinct valid PANs: 5 letters from the run and the number's high part, 4 digits (never 0000)."""
    letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    high, low = divmod(n, 9999)
    prefix = "B" + letters[run % 26] + letters[(run // 26) % 26] + letters[high % 26] + letters[(high // 26) % 26]
    return f"{prefix}{low + 1:04d}{letters[n % 26]}"


def payload(pan: str, n: int) -> dict[str, object]:
    income = ("90000.00", "50000.00", "20000.00", "80000.00")[n % 4]
    requested = ("500000.00", "300000.00", "200000.00", "5000000.00")[n % 4]
    return {
        "pan_number": pan,
        "first_name": "Bench",
        "last_name": "Applicant",
        "date_of_birth": "1988-03-14",
        "email": f"bench{n}@example.in",
        "phone_number": "9876543210",
        "monthly_income": income,
        "requested_amount": requested,
        "loan_type": ("PERSONAL", "HOME", "AUTO")[n % 3],
        "consent": True,
    }


def setup_partner(receiver_url: str) -> tuple[str, int]:
    """A partner with rate limits out of the way, an API key (loans read/write; endorsements:write for the limit
    endpoint) and one webhook endpoint on the local receiver, subscribed to every event type."""
    from apps.common.actors import Actor
    from apps.partners.models import Partner, Scope
    from apps.partners.services import api_key_create
    from apps.partners.tests.webhook_helpers import endpoint_for

    partner = Partner.objects.create(
        name=f"bench-loans-{uuid.uuid4().hex[:8]}",
        rate_limit_per_minute=10_000_000,
        rate_limit_per_hour=10_000_000,
        rate_limit_per_day=10_000_000,
    )
    _, plaintext = api_key_create(
        partner=partner,
        name="loan pipeline bench",
        scopes=[Scope.LOANS_READ, Scope.LOANS_WRITE, Scope.ENDORSEMENTS_WRITE],  # the last for the limit endpoint
        employer_ids=[],
        all_employers=True,
        expires_at=None,
        actor=Actor.system("bench"),
    )
    endpoint_for(partner.pk, receiver_url)
    return plaintext, partner.pk


def production_commands(procfile_path: Path = PROCFILE) -> dict[str, str]:
    """{name: command line} of the production layout: every Procfile process but `beat` (its 1 s safety nets and
    schedules are not the pipeline) and `key` (prints the demo key), and the webhook dispatcher — the Procfile's
    `webhooks` line, else docker-compose's command (tests/test_supervise.py holds the two files equal)."""
    import shlex

    import yaml
    from honcho.environ import parse_procfile

    procfile = dict(parse_procfile(procfile_path.read_text()).processes)
    commands = {name: command for name, command in procfile.items() if name not in NOT_IN_THE_PIPELINE}
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    commands["webhooks"] = procfile.get("webhooks") or shlex.join(
        compose["services"][COMPOSE_WEBHOOKS_SERVICE]["command"]
    )
    return commands


def single_commands(port: int, args: argparse.Namespace) -> dict[str, str]:
    """{name: command line} of the single layout: gunicorn (gthread) and one worker for every queue."""
    return {
        "web": f"{sys.executable} -m gunicorn config.wsgi:application -b 127.0.0.1:{port} -w {args.web_workers} "
        f"-k gthread --threads {args.web_threads} --log-level warning --keep-alive 30",
        "worker": f"{sys.executable} -m celery -A config worker -Q outbox,scoring,decisions,webhooks "
        f"-c {args.concurrency} -P {args.pool} --without-gossip --without-mingle --without-heartbeat -l WARNING "
        f"-n bench-loans-{os.getpid()}@%h",
    }


def start_processes(port: int, receiver_port: int, args: argparse.Namespace) -> dict[str, subprocess.Popen[bytes]]:
    """Start the layout's processes (each `bash -c "exec <command>"` in its own process group, as
    `config/supervise.py` starts them) and the webhook receiver."""
    production = args.layout == "production"
    nudge = "false" if production else "true"
    env = {
        **os.environ,
        "KEEL_PORT": str(port),
        "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ.get('PATH', '')}",
        "OUTBOX_NUDGE_ON_COMMIT": nudge,
        "WEBHOOKS_NUDGE_ON_COMMIT": nudge,
    }
    log = subprocess.DEVNULL if not args.verbose else None
    commands = production_commands(Path(args.procfile)) if production else single_commands(port, args)
    commands["receiver"] = f"{sys.executable} {ROOT / 'bench' / 'webhooks.py'} --serve {receiver_port}"
    processes = {}
    for name, command in commands.items():
        if args.verbose:
            print(f"  starting {name}: {command}", flush=True)
        processes[name] = subprocess.Popen(
            ["bash", "-c", f"exec {command}"], cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True
        )
    return processes


def group_cpu_seconds(pgid: int) -> float:
    """CPU time (user + system, s) of the live processes of one process group (a Celery pool's children too),
    from /proc; 0.0 where there is no /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the command: state, ppid, pgrp, …, utime (12), stime (13)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def stop_processes(processes: dict[str, subprocess.Popen[bytes]]) -> None:
    for process in processes.values():
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes.values():
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def wait_ready(base: str, timeout: float = 60) -> None:
    import requests

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise SystemExit("the web server did not come up")


_local = threading.local()


def at_rate(rate: int, total: int, send: Callable[[int], None]) -> None:
    """Call `send(0)` … `send(total - 1)` on a fixed schedule of `rate` per second, each on its own pool thread
    so a slow response never delays the next (open loop); returns when every call has returned."""
    with ThreadPoolExecutor(max_workers=16) as pool:
        started = time.perf_counter()
        for n in range(total):
            pause = started + n / rate - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            pool.submit(send, n)


def session(headers: dict[str, str]):  # type: ignore[no-untyped-def]
    import requests

    if not hasattr(_local, "session"):
        _local.session = requests.Session()
        _local.session.headers.update(headers)
    return _local.session


def latency_run(base: str, headers: dict[str, str], rate: int, seconds: float, run: int) -> dict[str, Any]:
    """POST at `rate`/s (each on its own pool thread so a slow response never delays the schedule), then wait
    until every accepted application is decided (or 60 s pass) and read every stage from the database."""
    total = int(rate * seconds)
    sent: dict[str, float] = {}  # application id → wall-clock send time (s)
    post_ms: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def post(n: int) -> None:
        started_wall, started = time.time(), time.perf_counter()
        response = session(headers).post(f"{base}/api/v1/loan-applications", json=payload(pan_for(run, n), n))
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 202:
            with lock:
                failures.append(f"{response.status_code}: {response.text[:200]}")
            return
        with lock:
            sent[response.json()["id"]] = started_wall
            post_ms.append(elapsed)

    at_rate(rate, total, post)
    wait_decided(list(sent), timeout=60)
    stages = stage_timings(sent)
    return {"total": total, "accepted": len(sent), "failures": failures, "post_ms": post_ms, **stages}


def wait_decided(ids: list[str], *, timeout: float) -> None:
    """After the run: until every application is decided and its decided webhook delivered, or `timeout`."""
    from django.db import connection

    deadline = time.time() + timeout
    while time.time() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM loan_applications_loanapplication WHERE id = ANY(%s::uuid[]) "
                "AND decided_at IS NOT NULL",
                [ids],
            )
            (decided,) = cursor.fetchone()
            cursor.execute(
                "SELECT count(*) FROM partners_webhookdelivery w JOIN partners_event e ON e.id = w.event_id "
                "WHERE e.type = 'loan_application.decided' AND e.object_id = ANY(%s) AND w.status = 'delivered'",
                [ids],
            )
            (delivered,) = cursor.fetchone()
        if decided >= len(ids) and delivered >= len(ids):
            return
        time.sleep(0.5)


_STAGES_SQL = """
SELECT s.payload ->> 'application_id',
       extract(epoch FROM s.created_at), extract(epoch FROM s.published_at), extract(epoch FROM si.processed_at),
       extract(epoch FROM s.done_at),
       extract(epoch FROM c.published_at), extract(epoch FROM ci.processed_at), extract(epoch FROM c.done_at),
       (SELECT extract(epoch FROM min(w.finished_at)) FROM partners_event e
          JOIN partners_webhookdelivery w ON w.event_id = e.id AND w.status = 'delivered'
         WHERE e.type = 'loan_application.decided' AND e.object_id = s.payload ->> 'application_id')
FROM outbox_outboxmessage s
LEFT JOIN outbox_outboxmessage c ON c.key = s.key AND c.topic = %(scored)s
LEFT JOIN outbox_inboxentry si ON si.message_id = s.id AND si.consumer = %(scoring_consumer)s
LEFT JOIN outbox_inboxentry ci ON ci.message_id = c.id AND ci.consumer = %(deciding_consumer)s
WHERE s.topic = %(submitted)s AND s.key = ANY(%(keys)s)
"""


def stage_timings(sent: dict[str, float]) -> dict[str, list[float]]:
    """{"decided": [POST → decided ms], <stage>: [ms]} from the rows the pipeline wrote (see the module doc).

    The deciding transaction's commit is taken as the `done_at` it writes last (`inbox_consume` marks the
    consumed row done as its final statement); a stage with a missing timestamp is left out of that stage."""
    from django.db import connection

    from apps.loan_applications.contracts import LoanTopic
    from apps.outbox import registry

    scoring, deciding = registry.get(LoanTopic.SUBMITTED), registry.get(LoanTopic.SCORED)
    assert scoring is not None
    assert deciding is not None
    params = {
        "submitted": str(LoanTopic.SUBMITTED),
        "scored": str(LoanTopic.SCORED),
        "scoring_consumer": scoring.name,
        "deciding_consumer": deciding.name,
        "keys": [f"loan:{i}" for i in sent],
    }
    with connection.cursor() as cursor:
        cursor.execute(_STAGES_SQL, params)
        rows = cursor.fetchall()
    out: dict[str, list[float]] = {"decided": [], **{key: [] for _, key in STAGES}}

    def add(key: str, start: Any, end: Any) -> None:
        if start is not None and end is not None:
            out[key].append((float(end) - float(start)) * 1000)

    for app_id, created, published, scoring_start, scored, d_published, d_start, decided, webhook in rows:
        t0 = sent[app_id]
        add("decided", t0, decided)
        add("post_to_commit", t0, created)
        add("commit_to_published", created, published)
        add("scoring_queue", published, scoring_start)
        add("published_to_scored", published, scored)
        add("scored_to_published", scored, d_published)
        add("decision_queue", d_published, d_start)
        add("published_to_decided", d_published, decided)
        add("decided_to_webhook", decided, webhook)
    return out


def bare_write_run(base: str, headers: dict[str, str], rate: int, seconds: float) -> tuple[list[float], int]:
    """The limit: POST the bare write endpoint at `rate`/s for `seconds`, scheduled as `latency_run` schedules its
    POSTs (each on its own pool thread); returns the response times (ms) and the number of failures."""
    total = int(rate * seconds)
    times: list[float] = []
    failures = 0
    lock = threading.Lock()

    def post(n: int) -> None:
        nonlocal failures
        started = time.perf_counter()
        response = session(headers).post(f"{base}/api/v1/bench/bare-create", json={"note": f"n{n}"})
        elapsed = (time.perf_counter() - started) * 1000
        with lock:
            if response.status_code == 201:
                times.append(elapsed)
            else:
                failures += 1

    at_rate(rate, total, post)
    return times, failures


def throughput(base: str, headers: dict[str, str], *, method: str, seconds: float, clients: int, run: int) -> float:
    """Requests/s completed by `clients` concurrent keep-alive clients for `seconds` (2xx only)."""
    counter = iter(range(10**9))
    stop = time.perf_counter() + seconds
    counts = [0] * clients

    def client(index: int) -> None:
        while time.perf_counter() < stop:
            if method == "POST":
                n = 100_000 + next(counter)
                response = session(headers).post(f"{base}/api/v1/loan-applications", json=payload(pan_for(run, n), n))
            else:
                response = session(headers).get(f"{base}/health")
            if 200 <= response.status_code < 300:
                counts[index] += 1

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client, range(clients)))
    return sum(counts) / (time.perf_counter() - started)


def describe_layout(args: argparse.Namespace) -> str:
    if args.layout == "single":
        return (
            f"single: gunicorn {args.web_workers}×{args.web_threads} threads; one celery worker -P {args.pool} "
            f"-c {args.concurrency} for every queue; relay: on-commit nudge"
        )
    defaults = re.compile(r"\$\{[A-Z_]+:-([^}]*)\}")  # `${VAR:-default}` → default, as the tests expand them
    commands = production_commands(Path(args.procfile))
    shown = "; ".join(name + ": " + defaults.sub(r"\1", c) for name, c in commands.items())
    return f"production ({args.procfile}, nudges off): {shown}"


def stage_line(label: str, values: list[float]) -> str:
    if not values:
        return f"      {label:<40} (no samples)"
    return f"      {label:<40} p50 {percentile(values, 50):6.1f}   p95 {percentile(values, 95):6.1f}   n={len(values)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layout", choices=["production", "single"], default="production")
    parser.add_argument(
        "--procfile", default=str(PROCFILE), help="--layout production: the Procfile to run (A/B of worker layouts)"
    )
    parser.add_argument("--rate", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--runs", type=int, default=5, help="paired limit / latency measurements")
    parser.add_argument("--throughput-seconds", type=float, default=4.0, help="0: skip the intake throughput")
    parser.add_argument("--clients", type=int, default=8)
    # --layout single only (the production layout runs the Procfile's command lines):
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=4)
    parser.add_argument("--pool", default="threads", help="Celery pool (threads, prefork)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--verbose", action="store_true", help="show the processes' output")
    args = parser.parse_args()
    django_ready()
    from django.db import connection

    from bench.limits import CREATE_TABLE_SQL

    with connection.cursor() as cursor:
        cursor.execute(CREATE_TABLE_SQL)
    receiver_port = free_port()
    plaintext, _ = setup_partner(f"http://127.0.0.1:{receiver_port}/loans")
    headers = {"Authorization": f"Api-Key {plaintext}"}
    run = int(time.time()) % (26 * 26)
    load_before = os.getloadavg()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    processes = start_processes(port, receiver_port, args)
    runs: list[dict[str, float]] = []
    stages: dict[str, list[float]] = {key: [] for _, key in STAGES}
    failures: list[str] = []
    post_rps = health_rps = float("nan")
    try:
        wait_ready(base)
        time.sleep(3)  # worker start-up
        # Warm-up: a few applications through the whole pipeline (imports, connection pools, breaker state), and
        # the limit endpoint.
        warm = latency_run(base, headers, rate=10, seconds=1, run=(run + 1) % 676)
        bare_write_run(base, headers, rate=10, seconds=1)
        cpu_before = {name: group_cpu_seconds(p.pid) for name, p in processes.items()}
        for r in range(args.runs):
            bare, bare_failures = bare_write_run(base, headers, args.rate, args.seconds)
            result = latency_run(base, headers, args.rate, args.seconds, (run + 2 + r) % 676)
            decided, post_ms = result["decided"], result["post_ms"]
            for _, key in STAGES:
                stages[key] += result[key]
            failures += list(result["failures"]) + [f"bare write failed {bare_failures}×"] * bool(bare_failures)
            figures = {
                "bare_p95": percentile(bare, 95) if bare else float("nan"),
                "post_p95": percentile(post_ms, 95) if post_ms else float("nan"),
                "p50": percentile(decided, 50) if decided else float("inf"),
                "p95": percentile(decided, 95) if decided else float("inf"),
                "decided": len(decided),
                "total": float(result["total"]),
                "load": os.getloadavg()[0],
            }
            figures["ratio"] = figures["p95"] / figures["bare_p95"]
            runs.append(figures)
            print(
                f"  run {r + 1}: bare write p95 {figures['bare_p95']:.1f} ms; "
                f"loan POST p95 {figures['post_p95']:.1f} ms;"
                f" POST → decided p50 {figures['p50']:.0f} p95 {figures['p95']:.0f} ms ({figures['decided']:.0f}/"
                f"{figures['total']:.0f} decided) → {figures['ratio']:.1f}× the bare write p95; load "
                f"{figures['load']:.2f}",
                flush=True,
            )
        cpu = {name: group_cpu_seconds(p.pid) - cpu_before[name] for name, p in processes.items()}
        if args.throughput_seconds > 0:  # last: it floods the pipeline
            health_rps = throughput(base, headers, method="GET", seconds=args.throughput_seconds,
                                    clients=args.clients, run=run)  # fmt: skip
            post_rps = throughput(base, headers, method="POST", seconds=args.throughput_seconds,
                                  clients=args.clients, run=run)  # fmt: skip
    finally:
        stop_processes(processes)

    p95s = [f["p95"] for f in runs]
    ratios = [f["ratio"] for f in runs]
    undecided = sum(f["total"] - f["decided"] for f in runs)
    p95_ok = max(p95s) <= TARGET_P95_MS and undecided == 0
    ratio_ok = max(ratios) <= TARGET_RATIO and undecided == 0
    print("\nLoan pipeline benchmark (POST → scoring → decision through the web server, outbox relay and Celery)")
    print(f"  machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    print(f"  layout: {describe_layout(args)}")
    print("  one webhook endpoint subscribed (local receiver); partner events written and delivered")
    print(f"  load average before the run: {load_before[0]:.2f}; after: {os.getloadavg()[0]:.2f}")
    print(f"  warm-up: {len(warm['decided'])} application(s) decided")
    print(f"  {args.runs} runs of {args.seconds:.0f} s at {args.rate} req/s, each: limit (bare DRF create, same auth, "
          "one INSERT … COMMIT) then loan POSTs; no polling, timestamps read from the database")  # fmt: skip
    print(
        f"  POST → decided p95: {median_and_worst(p95s, ' ms', digits=0)}   target ≤ "
        f"{TARGET_P95_MS:.0f} ms in the worst of {args.runs}: {verdict(p95_ok)}"
    )
    print(
        f"  ratio to the same run's bare write p95: {median_and_worst(ratios, '×')}"
        f"   target ≤ {TARGET_RATIO:.0f}× in the worst of {args.runs}: {verdict(ratio_ok)}"
    )
    print(f"  bare write p95: {median_and_worst([f['bare_p95'] for f in runs], ' ms')}")
    print(f"  undecided applications: {undecided:.0f}; failed requests: {len(failures)}")
    print("  per stage over the runs, ms (the same clock: client send time and the rows' timestamps):")
    for label, key in STAGES:
        print(stage_line(label, stages[key]))
    applications = sum(f["decided"] for f in runs)
    bare_writes = args.runs * int(args.rate * args.seconds)
    print(f"  CPU per process over the runs ({applications:.0f} applications, {bare_writes} bare writes), ms per "
          "application (the web figure includes the bare writes):")  # fmt: skip
    print("      " + "   ".join(f"{name} {1000 * seconds / max(applications, 1):.1f}" for name, seconds in cpu.items()))
    if args.throughput_seconds > 0:
        print(f"  intake throughput, {args.clients} concurrent clients, {args.throughput_seconds:.0f} s:")
        print(f"      POST loan application: {post_rps:,.0f} req/s   bare GET /health: {health_rps:,.0f} req/s   "
              f"ratio {post_rps / health_rps:.2f}")  # fmt: skip
    for failure in failures[:5]:
        print(f"      failure: {failure}")
    sys.exit(0 if p95_ok and ratio_ok else 1)


if __name__ == "__main__":
    main()
