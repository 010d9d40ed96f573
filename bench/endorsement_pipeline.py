"""End-to-end endorsement benchmark (SPEC §12): 10,000 endorsements from 50 employers over 3 sandbox
insurers — one per protocol with `--protocols rest,soap,file` (the default) — from upload to ACTIVE, with
nothing lost or doubled.

The partner uploads go through the real API (one JSON batch per employer) to a gunicorn server that also
serves the sandbox insurers over HTTP. The pipeline is then driven by `--workers` processes, each running
relay + consumers + scheduler windows in a loop (`manage.py outbox_relay`-style inline delivery, no Celery
hop): that isolates Keel's own work from broker configuration. For the file insurer, worker 0 also plays the
sandbox file insurer (one insurer process answers each batch file once) and every worker runs the result-file
import (safe concurrently: each file is claimed once). Limit measured in the same run: the raw
`INSERT … COMMIT` rate of the same PostgreSQL.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/keel_bench_e2e REDIS_URL=redis://127.0.0.1:6379/14 \
        .venv/bin/python bench/endorsement_pipeline.py [--endorsements 10000] [--employers 50] [--workers 2] \
        [--protocols rest,soap,file]

Also printed (issue 15 part 4): each pipeline worker's resident set after the run's first 1,000 endorsements
were terminal and after the last (from /proc/self/status), target: after ≤ 1.1× the first (no growth).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from _common import free_port, require_postgres_and_redis, setup_environment, start_gunicorn

setup_environment()


# Outbox rows a pipeline worker claims per relay round (see `pipeline_worker`).
CLAIM = 1
# A worker's RSS after the run is held to this ratio of its RSS when the first RSS_FIRST endorsements were done.
RSS_FIRST = 1_000
RSS_TARGET_RATIO = 1.1


def rss_mb() -> float:
    """This process's resident set, MB (Linux /proc)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def pipeline_worker(
    stop_at: float,
    index: int = 0,
    file_codes: tuple[str, ...] = (),
    partner_id: int = 0,
    rss_file: str = "",
    ready: Any = None,
    go: Any = None,
) -> None:
    """Relay + deliver inline + scheduler windows, until this run's endorsements are all terminal (40 idle
    rounds pass while none is left in flight) or the time is up.

    With `ready`/`go` (a multiprocessing queue and event) the worker starts first, reports ready once Django is
    set up, and waits for `go` (set when the upload has been accepted): production workers are already running
    when a partner uploads, so their start-up is not part of upload → terminal.

    Each round relays and delivers at most `CLAIM` outbox rows, then runs a scheduler tick — like a Celery
    worker that prefetches one task while beat ticks: a worker busy with one chunk leaves the next ones to the
    other workers instead of queueing them behind itself, and ready endorsements are sent while later chunks
    are still being processed. Every worker stays while anything of the run is in flight (a Celery worker does
    not exit when its queue is momentarily empty)."""
    import django

    django.setup()
    from apps.common.actors import Actor
    from apps.endorsements import services
    from apps.endorsements.models import Endorsement
    from apps.endorsements.models import EndorsementStatus as S
    from apps.insurers.files.importer import result_files_import
    from apps.insurers.sandbox.files import sandbox_file_process
    from apps.outbox.delivery import deliver_envelope
    from apps.outbox.relay import relay_once

    actor = Actor.system("bench.pipeline")
    Endorsement.objects.exists()  # connect before reporting ready
    if ready is not None:
        ready.put(index)
        go.wait()
    idle = 0
    rss_first: tuple[int, float] | None = None  # (terminal endorsements then, RSS MB)
    terminal = [S.ACTIVE, S.REJECTED, S.FAILED, S.CANCELLED]
    while time.time() < stop_at and idle < 40:
        if rss_first is None:  # a count per round until the first RSS_FIRST are done (then none)
            done = Endorsement.objects.filter(partner_id=partner_id, status__in=terminal).count()
            if done >= RSS_FIRST:
                rss_first = (done, rss_mb())
        claimed: list = []
        delivered = relay_once(batch_size=CLAIM, publish=lambda message, _queue: claimed.append(message))
        for message in claimed:
            deliver_envelope(message.to_envelope())
        dispatched = services.scheduler_tick(actor=actor, force=True)
        for code in file_codes:
            if index == 0:
                dispatched += sandbox_file_process(code=code)
            dispatched += sum(result_files_import(insurer_code=code).values())
        in_flight = (
            Endorsement.objects.filter(partner_id=partner_id)
            .exclude(status__in=[S.ACTIVE, S.REJECTED, S.FAILED, S.CANCELLED])
            .exists()
        )
        if delivered or dispatched or in_flight:
            idle = 0
            if not (delivered or dispatched):
                time.sleep(0.05)
        else:
            idle += 1
            time.sleep(0.05)
    if rss_file:
        done = Endorsement.objects.filter(partner_id=partner_id, status__in=terminal).count()
        with open(rss_file, "w") as out:
            json.dump({"first": rss_first, "last": (done, rss_mb())}, out)


def start_workers(count: int, target: Any, args_of: Any) -> tuple[list[Any], Any]:
    """Spawn `count` pipeline workers (`target(*args_of(index), ready, go)`), wait until each has set Django up:
    (processes, the `go` event to set once the upload is accepted)."""
    ctx = multiprocessing.get_context("spawn")
    ready, go = ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=target, args=(*args_of(index), ready, go)) for index in range(count)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    return procs, go


def last_transition_at(partner_id: int, statuses: Any) -> float | None:
    """Wall-clock time (epoch seconds) of the last history row moving one of the partner's endorsements into one
    of `statuses` — when the run was really done, without the workers' idle rounds before they exit."""
    from django.db.models import Max

    from apps.endorsements.models import EndorsementHistory

    at = EndorsementHistory.objects.filter(endorsement__partner_id=partner_id, to_status__in=list(statuses)).aggregate(
        last=Max("at")
    )["last"]
    return at.timestamp() if at else None


def raw_insert_commit_rate(n: int = 2000) -> float:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMP TABLE IF NOT EXISTS bench_raw (id bigserial primary key, v int)")
    connection.set_autocommit(False)
    try:
        started = time.perf_counter()
        with connection.cursor() as cursor:
            for i in range(n):
                cursor.execute("INSERT INTO bench_raw (v) VALUES (%s)", [i])
                connection.commit()
        return n / (time.perf_counter() - started)
    finally:
        connection.set_autocommit(True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--endorsements", type=int, default=10_000)
    parser.add_argument("--employers", type=int, default=50)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300)
    parser.add_argument("--port", type=int, default=0, help="port for the benchmark server (default: a free one)")
    parser.add_argument(
        "--protocols",
        default="rest,soap,file",
        help="comma-separated protocols of the three sandbox insurers, cycled (e.g. rest,soap,file or rest)",
    )
    parser.add_argument(
        "--deletions",
        type=int,
        default=0,
        help="then delete this many of the members (spread over the employers) and time that run too",
    )
    args = parser.parse_args()
    require_postgres_and_redis()
    import django

    django.setup()
    import requests
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from apps.common.actors import Actor
    from apps.employers.models import Policy
    from apps.employers.services import employer_create
    from apps.endorsements.models import Endorsement, EndorsementStatus
    from apps.insurers.callback_secrets import callback_secret_seal
    from apps.insurers.models import Insurer, InsurerProtocol
    from apps.insurers.sandbox.models import SandboxApplied, SandboxConfig
    from apps.insurers.sandbox.setup import generate_callback_secret
    from apps.ledger.selectors import ledger_verify
    from apps.ledger.services import topup_post
    from apps.outbox.models import OutboxMessage
    from apps.partners.models import Partner, Scope
    from apps.partners.services import api_key_create

    raw_rate = raw_insert_commit_rate()
    protocols = [p.strip() for p in args.protocols.split(",") if p.strip()]
    if not protocols or set(protocols) - {"rest", "soap", "file"}:
        sys.exit("--protocols takes rest, soap and/or file")
    insurer_protocols = [protocols[i % len(protocols)] for i in range(3)]
    insurer_codes = tuple(f"bench-{protocol}-{i}" for i, protocol in enumerate(insurer_protocols))
    file_root = tempfile.mkdtemp(prefix="keel-bench-files-")
    port = args.port or free_port()
    base = f"http://127.0.0.1:{port}"
    actor = Actor.system("bench")
    run = uuid.uuid4().hex[:6]
    # Leftovers of earlier runs must not be relayed by this one.
    OutboxMessage.objects.exclude(status="done").delete()
    for code, protocol in zip(insurer_codes, insurer_protocols, strict=True):
        insurer, _ = Insurer.objects.update_or_create(
            code=code,
            defaults={
                "name": code,
                "protocol": protocol,
                "endpoint": {"rest": f"{base}/sandbox/{code}", "soap": f"{base}/sandbox/{code}/soap"}.get(protocol, ""),
                "outbound_folder": f"{file_root}/{code}/outbound" if protocol == InsurerProtocol.FILE else "",
                "inbound_folder": f"{file_root}/{code}/inbound" if protocol == InsurerProtocol.FILE else "",
                "batch_size": 500,
                "batch_window_seconds": 1,
                "rate_limit_per_minute": 100_000,
                "callback_secret": callback_secret_seal(generate_callback_secret(), insurer_code=code),
            },
        )
        SandboxConfig.objects.update_or_create(
            code=code, defaults={"mode": "sync", "failure_rate": 0.0, "latency_ms": 0}
        )
    partner = Partner.objects.create(
        name=f"bench-e2e-{run}",
        rate_limit_per_minute=1_000_000,
        rate_limit_per_hour=10_000_000,
        rate_limit_per_day=100_000_000,
    )
    _, key = api_key_create(partner=partner, name="bench", scopes=list(Scope.values), all_employers=True, actor=actor)
    today = date.today()
    per_employer = args.endorsements // args.employers
    uploads = []
    for n in range(args.employers):
        employer = employer_create(
            partner_id=partner.pk,
            name=f"E2E {n}",
            external_ref=f"E2E-{run}-{n}",
            actor=actor,
            velocity_limit_per_hour=1_000_000,
        )
        insurer = Insurer.objects.get(code=insurer_codes[n % len(insurer_codes)])
        policy = Policy.objects.create(
            employer=employer,
            insurer=insurer,
            policy_number=f"E2E-{run}-{n}",
            start_date=today - timedelta(days=10),
            end_date=today + timedelta(days=355),
            premium_rate_per_mille=Decimal("4.5"),
            default_sum_insured=300_000_00,
        )
        topup_post(employer_id=employer.pk, amount=10**12, reference=f"e2e-{run}-{n}", actor=actor)
        rows = [
            {
                "type": "addition",
                "effective_date": today.isoformat(),
                "employee": {
                    "employee_code": f"M{n}-{i}",
                    "first_name": "Bench",
                    "last_name": "Member",
                    "date_of_birth": "1990-01-01",
                    "gender": "female",
                    "email": f"m{n}-{i}@bench.example",
                },
            }
            for i in range(per_employer)
        ]
        uploads.append({"employer": employer.pk, "policy": policy.pk, "rows": rows})
    total = per_employer * args.employers
    connection.close()

    server = start_gunicorn(port)
    headers = {"Authorization": f"Api-Key {key}"}

    def upload_and_run(batches: list[dict]) -> tuple[float, float, float]:
        """Start the pipeline workers, upload the batches through the API, run until quiet: (upload s,
        upload → last terminal transition s, upload → workers quiet s)."""
        stop_at = time.time() + args.timeout + 120
        file_codes = tuple(c for c, p in zip(insurer_codes, insurer_protocols, strict=True) if p == "file")
        rss_files = [os.path.join(file_root, f"rss-{len(rss_reports)}-{index}.json") for index in range(args.workers)]
        workers, go = start_workers(
            args.workers, pipeline_worker, lambda i: (stop_at, i, file_codes, partner.pk, rss_files[i])
        )
        started_wall, started = time.time(), time.perf_counter()
        for upload in batches:
            response = requests.post(f"{base}/api/v1/endorsement-batches", json=upload, headers=headers, timeout=120)
            if response.status_code != 202:
                go.set()
                sys.exit(f"upload failed: HTTP {response.status_code} {response.text[:300]}")
        uploaded = time.perf_counter() - started
        go.set()
        for w in workers:
            w.join()
        quiet = time.perf_counter() - started
        terminal = [EndorsementStatus.ACTIVE, EndorsementStatus.REJECTED, EndorsementStatus.FAILED]
        last = last_transition_at(partner.pk, terminal)
        connection.close()
        report: list[dict] = []
        for path in rss_files:
            if os.path.exists(path):
                with open(path) as saved:
                    report.append(json.load(saved))
        rss_reports.append(report)
        return uploaded, (last - started_wall) if last else quiet, quiet

    rss_reports: list[list[dict]] = []
    deletion_run: tuple[float, float, float] | None = None
    try:
        uploaded, elapsed, quiet = upload_and_run(uploads)
        if args.deletions:
            per = max(1, args.deletions // args.employers)
            deletion_run = upload_and_run(
                [
                    {
                        "employer": u["employer"],
                        "policy": u["policy"],
                        "rows": [
                            {
                                "type": "deletion",
                                "effective_date": today.isoformat(),
                                "employee_code": r["employee"]["employee_code"],
                            }
                            for r in u["rows"][:per]
                        ],
                    }
                    for u in uploads
                ]
            )
    finally:
        server.terminate()
        server.wait(timeout=20)
        shutil.rmtree(file_root, ignore_errors=True)

    ids = Endorsement.objects.filter(partner_id=partner.pk)
    by_status: dict[str, int] = {}
    for status in ids.values_list("status", flat=True):
        by_status[status] = by_status.get(status, 0) + 1
    keys = list(ids.values_list("idempotency_key", flat=True))
    applied = SandboxApplied.objects.filter(idempotency_key__in=keys)
    doubled = applied.filter(times_seen__gt=1).count()
    report = ledger_verify()
    print("\nEnd-to-end endorsement benchmark")
    print(
        f"  machine: {os.cpu_count()} cores; gunicorn 3 sync workers serving the API and 3 sandbox insurers; "
        f"{args.workers} pipeline worker process(es)"
    )
    print(f"  limit  raw INSERT…COMMIT: {raw_rate:,.0f} rows/s")
    print(
        f"  {total:,} endorsements, {args.employers} employers, {len(insurer_codes)} insurers "
        f"({', '.join(f'{c}: {p}' for c, p in zip(insurer_codes, insurer_protocols, strict=True))})"
    )
    print(
        f"      uploaded ({args.employers} batches through the API) in {uploaded:.1f} s; "
        f"upload → all terminal in {elapsed:.1f} s "
        f"({total / elapsed:,.0f} endorsements/s, {total / elapsed / raw_rate:.2f}× raw commit rate; "
        f"the last terminal transition's time; the workers were quiet after {quiet:.1f} s)"
    )
    print(f"      statuses: {by_status}")
    print(
        f"      sandbox applied {applied.count():,} keys; applied more than once: {doubled}; "
        f"ledger_verify: {'OK' if report.ok else report.problems[:3]}"
    )
    expected = total + (max(1, args.deletions // args.employers) * args.employers if args.deletions else 0)
    ok = by_status.get("ACTIVE", 0) == expected and doubled == 0 and report.ok
    if deletion_run is not None:
        deleted = expected - total
        print(
            f"  then {deleted:,} deletions (refunds + coverage ends): uploaded in {deletion_run[0]:.1f} s; "
            f"upload → all terminal in {deletion_run[1]:.1f} s ({deleted / deletion_run[1]:,.0f} endorsements/s)"
        )
    print(f"      target ≤ 30 s, nothing lost or doubled: {'MET' if ok and elapsed <= 30 else 'MISSED'}")
    print("  pipeline workers' memory over the upload run (issue 15 part 4):")
    for index, worker in enumerate(rss_reports[0] if rss_reports else []):
        first, last = worker["first"], worker["last"]
        if first is None:
            print(f"      worker {index}: fewer than {RSS_FIRST:,} endorsements terminal while it sampled; "
                  f"RSS at the end {last[1]:.0f} MB")  # fmt: skip
            continue
        ratio = last[1] / first[1]
        print(
            f"      worker {index}: RSS {first[1]:.0f} MB when {first[0]:,} were terminal, {last[1]:.0f} MB after "
            f"{last[0]:,}: {ratio:.2f}×   target ≤ {RSS_TARGET_RATIO}×: "
            f"{'MET' if ratio <= RSS_TARGET_RATIO else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
