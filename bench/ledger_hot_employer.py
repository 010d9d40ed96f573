"""Ledger benchmark on ONE hot employer through the real pipeline (issue 9): 10,000 endorsements of one employer
(one account, so every hold and capture serialises on the same row) from upload to ACTIVE, and the ledger's
hold + capture throughput within that run. Targets: upload → ACTIVE ≤ 15 s; ≥ 2,000 hold+capture pairs/s in
the ledger rounds.

The partner upload goes through the real API (one JSON batch) to a gunicorn server that also serves the sandbox
insurer; the pipeline is then driven by `--workers` processes exactly as in `bench/endorsement_pipeline.py`
(relay + consumers + scheduler windows in a loop, no Celery hop). In each worker `holds_place_bulk` and
`holds_capture_bulk` (the only hold and capture path, ADR 0036) are wrapped by a timer: "pairs/s in the ledger
rounds" is the number of holds captured ÷ the seconds spent inside those two calls, summed over the workers
(each call is one lock round per employer; its caller's COMMIT is not counted). Limit measured in the same run:
the raw single-row `UPDATE … SET x = x + 1; COMMIT` rate of the same PostgreSQL from one connection — the
ceiling of anything that serialises on one row and commits each change.

    createdb -h 127.0.0.1 -U postgres keel_bench_ledger_hot_employer
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/keel_bench_ledger_hot_employer REDIS_URL=redis://127.0.0.1:6379/14 \
        .venv/bin/python bench/ledger_hot_employer.py [--endorsements 10000] [--workers 2] [--protocol rest]
    dropdb -h 127.0.0.1 -U postgres keel_bench_ledger_hot_employer
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from _common import free_port, require_postgres_and_redis, setup_environment, start_gunicorn

setup_environment()

# Totals of one worker's ledger calls: [calls, items, seconds] per operation.
_Totals = dict[str, list[float]]


def _timed(name: str, fn: Callable[..., Any], totals: _Totals, count: Callable[[Any], int]) -> Callable[..., Any]:
    def wrapper(**kwargs: Any) -> Any:
        started = time.perf_counter()
        result = fn(**kwargs)
        spent = time.perf_counter() - started
        row = totals.setdefault(name, [0, 0, 0.0])
        row[0] += 1
        row[1] += count(result)
        row[2] += spent
        return result

    return wrapper


def timed_worker(stop_at: float, index: int, partner_id: int, out: Any, ready: Any = None, go: Any = None) -> None:
    """`endorsement_pipeline.pipeline_worker` with the ledger's hold and capture calls timed; puts the totals."""
    import django

    django.setup()
    from endorsement_pipeline import pipeline_worker

    from apps.ledger import services as ledger

    totals: _Totals = {}
    ledger.holds_place_bulk = _timed(  # type: ignore[assignment]
        "place", ledger.holds_place_bulk, totals, lambda results: sum(1 for r in results if r.placed)
    )
    ledger.holds_capture_bulk = _timed("capture", ledger.holds_capture_bulk, totals, len)  # type: ignore[assignment]
    try:
        pipeline_worker(stop_at, index, (), partner_id, ready=ready, go=go)
    finally:
        out.put(totals)


def setup_run(base: str, protocol: str, endorsements: int) -> tuple[int, str, dict[str, Any]]:
    """One sandbox insurer, one partner with an API key, ONE funded employer with a policy: (partner id, API key,
    the upload body of `endorsements` additions)."""
    from apps.common.actors import Actor
    from apps.employers.models import Policy
    from apps.employers.services import employer_create
    from apps.insurers.callback_secrets import callback_secret_seal
    from apps.insurers.models import Insurer
    from apps.insurers.sandbox.models import SandboxConfig
    from apps.insurers.sandbox.setup import generate_callback_secret
    from apps.ledger.services import topup_post
    from apps.outbox.models import OutboxMessage
    from apps.partners.models import Partner, Scope
    from apps.partners.services import api_key_create

    actor = Actor.system("bench")
    run = uuid.uuid4().hex[:6]
    code = f"bench-hot-{protocol}"
    OutboxMessage.objects.exclude(status="done").delete()  # leftovers of earlier runs are not this run's work
    insurer, _ = Insurer.objects.update_or_create(
        code=code,
        defaults={
            "name": code,
            "protocol": protocol,
            "endpoint": {"rest": f"{base}/sandbox/{code}", "soap": f"{base}/sandbox/{code}/soap"}[protocol],
            "batch_size": 500,
            "batch_window_seconds": 1,
            "rate_limit_per_minute": 100_000,
            "callback_secret": callback_secret_seal(generate_callback_secret(), insurer_code=code),
        },
    )
    SandboxConfig.objects.update_or_create(code=code, defaults={"mode": "sync", "failure_rate": 0.0, "latency_ms": 0})
    partner = Partner.objects.create(
        name=f"bench-hot-{run}",
        rate_limit_per_minute=1_000_000,
        rate_limit_per_hour=10_000_000,
        rate_limit_per_day=100_000_000,
    )
    _, key = api_key_create(partner=partner, name="bench", scopes=list(Scope.values), all_employers=True, actor=actor)
    employer = employer_create(
        partner_id=partner.pk, name="Hot", external_ref=f"HOT-{run}", actor=actor, velocity_limit_per_hour=1_000_000
    )
    today = date.today()
    policy = Policy.objects.create(
        employer=employer,
        insurer=insurer,
        policy_number=f"HOT-{run}",
        start_date=today - timedelta(days=10),
        end_date=today + timedelta(days=355),
        premium_rate_per_mille=Decimal("4.5"),
        default_sum_insured=300_000_00,
    )
    topup_post(employer_id=employer.pk, amount=10**12, reference=f"hot-{run}", actor=actor)
    rows = [
        {
            "type": "addition",
            "effective_date": today.isoformat(),
            "employee": {
                "employee_code": f"H-{i}",
                "first_name": "Bench",
                "last_name": "Member",
                "date_of_birth": "1990-01-01",
                "gender": "female",
                "email": f"h-{i}@bench.example",
            },
        }
        for i in range(endorsements)
    ]
    return partner.pk, key, {"employer": employer.pk, "policy": policy.pk, "rows": rows}


def upload_and_run(
    base: str, key: str, body: dict[str, Any], *, partner_id: int, workers: int, timeout: float
) -> tuple[float, float, float, list[_Totals]]:
    """Start the pipeline workers (already running when the partner uploads, as in production), upload the batch
    through the API, run until quiet: (upload s, upload → last ACTIVE transition s, upload → workers quiet s,
    totals)."""
    import requests
    from endorsement_pipeline import last_transition_at, start_workers

    from apps.endorsements.models import EndorsementStatus

    out = multiprocessing.get_context("spawn").Queue()
    stop_at = time.time() + timeout + 120
    procs, go = start_workers(workers, timed_worker, lambda i: (stop_at, i, partner_id, out))
    started_wall, started = time.time(), time.perf_counter()
    response = requests.post(
        f"{base}/api/v1/endorsement-batches", json=body, headers={"Authorization": f"Api-Key {key}"}, timeout=300
    )
    go.set()
    if response.status_code != 202:
        sys.exit(f"upload failed: HTTP {response.status_code} {response.text[:300]}")
    uploaded = time.perf_counter() - started
    totals = [out.get() for _ in procs]
    for p in procs:
        p.join()
    quiet = time.perf_counter() - started
    last = last_transition_at(partner_id, [EndorsementStatus.ACTIVE, EndorsementStatus.REJECTED])
    return uploaded, (last - started_wall) if last else quiet, quiet, totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endorsements", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--protocol", choices=["rest", "soap"], default="rest")
    parser.add_argument("--limit-seconds", type=float, default=3.0, help="length of the raw UPDATE+COMMIT loop")
    parser.add_argument("--port", type=int, default=0, help="port for the benchmark server (default: a free one)")
    args = parser.parse_args()
    require_postgres_and_redis()
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from ledger_hold_capture import raw_update_commit_rate

    call_command("migrate", verbosity=0)
    from apps.endorsements.models import Endorsement
    from apps.insurers.sandbox.models import SandboxApplied
    from apps.ledger.selectors import ledger_verify

    limit = raw_update_commit_rate(args.limit_seconds)
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    partner_id, key, body = setup_run(base, args.protocol, args.endorsements)
    connection.close()
    server = start_gunicorn(port)
    try:
        uploaded, elapsed, quiet, totals = upload_and_run(
            base, key, body, partner_id=partner_id, workers=args.workers, timeout=args.timeout
        )
    finally:
        server.terminate()
        server.wait(timeout=20)

    ours = Endorsement.objects.filter(partner_id=partner_id)
    by_status: dict[str, int] = {}
    for status in ours.values_list("status", flat=True):
        by_status[status] = by_status.get(status, 0) + 1
    doubled = SandboxApplied.objects.filter(
        idempotency_key__in=list(ours.values_list("idempotency_key", flat=True)), times_seen__gt=1
    ).count()
    report = ledger_verify()
    place = [sum(t.get("place", [0, 0, 0.0])[i] for t in totals) for i in range(3)]
    capture = [sum(t.get("capture", [0, 0, 0.0])[i] for t in totals) for i in range(3)]
    ledger_seconds = place[2] + capture[2]
    pairs = min(place[1], capture[1])
    rate = pairs / ledger_seconds if ledger_seconds else 0.0
    print("\nLedger on one hot employer, through the real pipeline")
    print(f"  machine: {os.cpu_count()} cores; gunicorn 3 sync workers; {args.workers} pipeline worker process(es)")
    print(f"  limit  raw single-row UPDATE+COMMIT, 1 connection: {limit:,.0f} /s")
    print(
        f"  {args.endorsements:,} endorsements, 1 employer, 1 {args.protocol} sandbox insurer: uploaded in "
        f"{uploaded:.1f} s; upload → all terminal in {elapsed:.1f} s ({args.endorsements / elapsed:,.0f}/s; the last "
        f"ACTIVE transition's time; the workers were quiet after {quiet:.1f} s)"
    )
    print(
        f"      statuses: {by_status}; applied more than once: {doubled}; ledger_verify: "
        f"{'OK' if report.ok else report.problems[:3]}"
    )
    print(
        f"  ledger rounds: holds_place_bulk {int(place[0])} calls, {int(place[1]):,} placed in {place[2]:.2f} s; "
        f"holds_capture_bulk {int(capture[0])} calls, {int(capture[1]):,} captured in {capture[2]:.2f} s"
    )
    print(
        f"      {pairs:,} hold+capture pairs in {ledger_seconds:.2f} s inside the ledger = {rate:,.0f} pairs/s "
        f"({rate / limit:.2f}× the raw UPDATE+COMMIT rate)"
    )
    ok = by_status.get("ACTIVE", 0) == args.endorsements and doubled == 0 and report.ok
    met = ok and elapsed <= 15 and rate >= 2000
    print(f"  targets upload → ACTIVE ≤ 15 s, ≥ 2,000 pairs/s, nothing lost or doubled: {'MET' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
