"""Loan pipeline benchmark (SPEC §12, issue 15 part 2): loan application `POST` → decided at 20 req/s, 5 times.

Starts a real web server (gunicorn, `config.settings.bench`) and a real Celery worker (queues outbox, scoring,
decisions, webhooks; the relay runs on the outbox's on-commit nudge), creates a partner and an API key, and
**5 times**: first POSTs the bare write endpoint of `bench/limits.py` (same middleware, API-key auth, scope
check and rate limiter; one `INSERT … COMMIT`) at the same rate on the same server — the run's limit — then
POSTs applications at that rate with distinct valid PANs and polls each until decided. Prints each run, then:

- POST → decided p95 (client send time → the application's `decided_at`; exact, same host clock), median and
  worst of the runs, and its ratio to the same run's bare-write p95; targets in the worst of the runs:
  p95 ≤ 250 ms and ≤ 10× the bare write p95;
- intake throughput: the most POSTs/s the server accepts over a few seconds, against bare `GET /health`;
- per hop: commit → published and published → consumed.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/keel_loans REDIS_URL=redis://127.0.0.1:6379/11 \
        .venv/bin/python bench/loan_pipeline.py [--rate 20] [--seconds 15] [--runs 5] [--web-workers 2]

Exit status 1 when a target is missed.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

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
set_bench_pan_keys()  # the web server and the worker must share them

FINAL = {"PRE_APPROVED", "REJECTED", "MANUAL_REVIEW"}
TARGET_P95_MS = 250.0
TARGET_RATIO = 10.0


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


def setup_partner() -> tuple[str, int]:
    from apps.common.actors import Actor
    from apps.partners.models import Partner, Scope
    from apps.partners.services import api_key_create

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
    return plaintext, partner.pk


def start_processes(port: int, args: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    # `--relay nudge`: the on-commit Celery nudge runs the relay as a task on the worker. `--relay process`: the
    # production layout of ADR 0048 — an `outbox_relay` process woken by PostgreSQL NOTIFY, no nudge.
    env = {**os.environ, "OUTBOX_NUDGE_ON_COMMIT": "true" if args.relay == "nudge" else "false"}
    log = subprocess.DEVNULL if not args.verbose else None
    relay = []
    if args.relay == "process":
        command = [sys.executable, "manage.py", "outbox_relay", "--linger-ms", "5"]
        relay.append(subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True))
    web = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "config.wsgi:application", "-b", f"127.0.0.1:{port}",
         "-w", str(args.web_workers), "-k", "gthread", "--threads", str(args.web_threads),
         "--log-level", "warning", "--keep-alive", "30"],
        cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", "outbox,scoring,decisions,webhooks",
         "-c", str(args.concurrency), "-P", args.pool, "--without-gossip", "--without-mingle",
         "--without-heartbeat", "-l", "WARNING", "-n", f"bench-loans-{os.getpid()}@%h"],
        cwd=ROOT, env=env, stdout=log, stderr=log, start_new_session=True,
    )  # fmt: skip
    return [web, worker, *relay]


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def wait_ready(base: str, timeout: float = 30) -> None:
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


def latency_run(
    base: str, headers: dict[str, str], rate: int, seconds: float, run: int, poll_interval: float = 0.25
) -> dict[str, object]:
    """POST at `rate`/s (each on its own pool thread so a slow response never delays the schedule) and
    poll every application until decided."""
    total = int(rate * seconds)
    sent: dict[str, float] = {}  # id → wall-clock send time
    post_ms: list[float] = []
    observed: dict[str, float] = {}
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

    done = threading.Event()

    def poll() -> None:
        import requests

        poller = requests.Session()
        poller.headers.update(headers)
        last_poll: dict[str, float] = {}
        while not done.is_set() or len(observed) < len(sent):
            with lock:
                pending = [i for i in sent if i not in observed]
            now = time.time()
            for application_id in pending:
                # Each application is polled at most every `poll_interval` s: polling must not become the load.
                if now - last_poll.get(application_id, sent[application_id]) < poll_interval:
                    continue
                last_poll[application_id] = time.time()
                response = poller.get(f"{base}/api/v1/loan-applications/{application_id}")
                if response.status_code == 200 and response.json()["status"] in FINAL:
                    observed[application_id] = time.time()
            if done.is_set() and time.time() > deadline:
                break
            time.sleep(0.01)

    deadline = float("inf")
    poller_thread = threading.Thread(target=poll, daemon=True)
    poller_thread.start()
    at_rate(rate, total, post)
    deadline = time.time() + 30
    done.set()
    poller_thread.join(timeout=40)

    from apps.loan_applications.models import LoanApplication

    decided_at = dict(LoanApplication.objects.filter(pk__in=list(sent)).values_list("id", "decided_at"))
    exact = [(decided_at[uuid.UUID(i)].timestamp() - t) * 1000 for i, t in sent.items() if decided_at.get(uuid.UUID(i))]
    polled = [(observed[i] - t) * 1000 for i, t in sent.items() if i in observed]
    return {"total": total, "accepted": len(sent), "failures": failures, "post_ms": post_ms, "exact": exact,
            "polled": polled}  # fmt: skip


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


def hop_breakdown(partner_id: int) -> list[tuple[str, int, float, float, float, float]]:
    """Per topic: commit → published by the relay, and published → consumer done (queue wait + handler)."""
    from django.db import connection

    sql = """
        SELECT topic, count(*),
          percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM published_at - created_at) * 1000),
          percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM published_at - created_at) * 1000),
          percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM done_at - published_at) * 1000),
          percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM done_at - published_at) * 1000)
        FROM outbox_outboxmessage
        WHERE topic LIKE 'loan_application.%%' AND (payload ->> 'partner_id')::bigint = %s
          AND published_at IS NOT NULL AND done_at IS NOT NULL
        GROUP BY topic ORDER BY topic DESC
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [partner_id])
        return [(r[0], r[1], r[2], r[3], r[4], r[5]) for r in cursor.fetchall()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--runs", type=int, default=5, help="paired limit / latency measurements")
    parser.add_argument("--throughput-seconds", type=float, default=4.0)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=4)
    # Threads: the steps wait on PostgreSQL/Redis most of the time; prefork -c 2 queues tasks behind each other
    # (measured: POST → decided p50 ~10 s with prefork -c 2 vs ~0.7 s with threads -c 4 on a loaded 2-core box).
    parser.add_argument("--pool", default="threads", help="Celery pool (threads, prefork)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--relay", choices=["nudge", "process"], default="nudge", help="what runs the relay (see start_processes)"
    )
    parser.add_argument("--poll-interval", type=float, default=0.25, help="seconds between polls of one application")
    parser.add_argument("--verbose", action="store_true", help="show the server's and worker's output")
    args = parser.parse_args()
    django_ready()
    from django.db import connection

    from bench.limits import CREATE_TABLE_SQL

    with connection.cursor() as cursor:
        cursor.execute(CREATE_TABLE_SQL)
    plaintext, partner_id = setup_partner()
    headers = {"Authorization": f"Api-Key {plaintext}"}
    run = int(time.time()) % (26 * 26)
    load_before = os.getloadavg()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    processes = start_processes(port, args)
    runs: list[dict[str, float]] = []
    failures: list[str] = []
    try:
        wait_ready(base)
        time.sleep(3)  # worker start-up
        # Warm-up: a few applications through the whole pipeline (imports, connection pools, breaker state), and
        # the limit endpoint.
        warm = latency_run(base, headers, rate=10, seconds=1, run=(run + 1) % 676)
        bare_write_run(base, headers, rate=10, seconds=1)
        for r in range(args.runs):
            bare, bare_failures = bare_write_run(base, headers, args.rate, args.seconds)
            result = latency_run(base, headers, args.rate, args.seconds, (run + 2 + r) % 676, args.poll_interval)
            exact = result["exact"]
            post_ms = result["post_ms"]
            assert isinstance(exact, list)
            assert isinstance(post_ms, list)
            failures += list(result["failures"]) + [f"bare write failed {bare_failures}×"] * bool(bare_failures)  # type: ignore[arg-type]
            figures = {
                "bare_p95": percentile(bare, 95) if bare else float("nan"),
                "post_p95": percentile(post_ms, 95) if post_ms else float("nan"),
                "p50": percentile(exact, 50) if exact else float("inf"),
                "p95": percentile(exact, 95) if exact else float("inf"),
                "decided": len(exact),
                "total": float(result["total"]),  # type: ignore[arg-type]
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
        hops = hop_breakdown(partner_id)  # before the throughput runs flood the pipeline
        health_rps = throughput(base, headers, method="GET", seconds=args.throughput_seconds, clients=args.clients,
                                run=run)  # fmt: skip
        post_rps = throughput(base, headers, method="POST", seconds=args.throughput_seconds, clients=args.clients,
                              run=run)  # fmt: skip
    finally:
        stop_processes(processes)

    p95s = [f["p95"] for f in runs]
    ratios = [f["ratio"] for f in runs]
    undecided = sum(f["total"] - f["decided"] for f in runs)
    p95_ok = max(p95s) <= TARGET_P95_MS and undecided == 0
    ratio_ok = max(ratios) <= TARGET_RATIO and undecided == 0
    print("\nLoan pipeline benchmark (POST → scoring → decision through gunicorn, outbox and a Celery worker)")
    print(f"  machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}; gunicorn {args.web_workers}×"
          f"{args.web_threads} threads; celery -P {args.pool} -c {args.concurrency}; relay: {args.relay}")  # fmt: skip
    print(f"  load average before the run: {load_before[0]:.2f}; after: {os.getloadavg()[0]:.2f}")
    print(f"  warm-up: {len(warm['exact'])} application(s) decided")  # type: ignore[arg-type]
    print(f"  {args.runs} runs of {args.seconds:.0f} s at {args.rate} req/s, each: limit (bare DRF create, same auth, "
          "one INSERT … COMMIT) then loan POSTs polled until decided")  # fmt: skip
    print(
        f"  POST → decided p95: {median_and_worst(p95s, ' ms', digits=0)}   target ≤ "
        f"{TARGET_P95_MS:.0f} ms in the worst of {args.runs}: {verdict(p95_ok)}"
    )
    print(
        f"  ratio to the same run's bare write p95: {median_and_worst(ratios, '×')}"
        f"   target ≤ {TARGET_RATIO:.0f}× in the worst of {args.runs}: {verdict(ratio_ok)}"
    )
    print(f"  undecided applications: {undecided:.0f}; failed requests: {len(failures)}")
    print(f"  intake throughput, {args.clients} concurrent clients, {args.throughput_seconds:.0f} s:")
    print(f"      POST loan application: {post_rps:,.0f} req/s   bare GET /health: {health_rps:,.0f} req/s   "
          f"ratio {post_rps / health_rps:.2f}")  # fmt: skip
    print("  per hop over the runs (incl. warm-up), ms:")
    for topic, count, c2p50, c2p95, p2d50, p2d95 in hops:
        print(f"      {topic:<28} n={count:<5} commit→published p50 {c2p50:.0f} p95 {c2p95:.0f}   "
              f"published→consumed p50 {p2d50:.0f} p95 {p2d95:.0f}")  # fmt: skip
    for failure in failures[:5]:
        print(f"      failure: {failure}")
    sys.exit(0 if p95_ok and ratio_ok else 1)


if __name__ == "__main__":
    main()
