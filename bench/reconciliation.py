"""Reconciliation benchmark (issue 12, ADR 0040/0045): a 100,000-member roster pulled and matched.

Keel covers 100,000 members on one policy; the sandbox REST insurer (served by gunicorn on a free port) holds
the same roster with 5% drift: 1,500 members dropped, 1,500 it alone holds, 1,000 dates of birth and 1,000
sums insured changed. A worker process (its own Python, like a Celery worker) runs one reconciliation end to
end: run start and locks, 100 keyset pages of 1,000 rows pulled over HTTP and recorded (upsert, history,
counters, lock heartbeat), the merge-join match writing 5,000 discrepancies, the statement compared. Target
≤ 20 s end to end and peak worker RSS ≤ 300 MB (pages are streamed, one in memory at a time).

Limit in the same run: a bare paginated read of the same 100,000 rows from the same sandbox (`requests`, the
same 1,000-row pages and cursors, JSON parsed and dropped) — the ratio shows what recording and matching add.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/keel_bench_reconciliation REDIS_URL=redis://127.0.0.1:6379/14 \\
        .venv/bin/python bench/reconciliation.py [--members 100000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import date, timedelta

from _common import ROOT, bench_world, django_ready, free_port, setup_environment, start_gunicorn

setup_environment()

TARGET_SECONDS = 20.0
TARGET_RSS_MB = 300.0
PAGE = 1000

WORKER = """
import json, os, sys, time
sys.path.insert(0, {root!r})
import django
django.setup()
from apps.common.actors import Actor
from apps.reconciliation.runner import reconciliation_execute
from apps.reconciliation.services import reconciliation_start
started = time.perf_counter()
run = reconciliation_start(insurer_id={insurer}, employer_ids=[{employer}], employer_id={employer}, policy_id=None,
                           partner_id=None, actor=Actor.system("bench"), queue=False)
done = reconciliation_execute(run_id=run.pk, page_size={page})
seconds = time.perf_counter() - started
# The nightly case: the same roster pulled again (entries known, most unchanged), not part of the target.
again_started = time.perf_counter()
again = reconciliation_start(insurer_id={insurer}, employer_ids=[{employer}], employer_id={employer}, policy_id=None,
                             partner_id=None, actor=Actor.system("bench"), queue=False)
again = reconciliation_execute(run_id=again.pk, page_size={page})
again_seconds = time.perf_counter() - again_started
# VmHWM: this process's own peak RSS since its exec (ru_maxrss of a forked child also counts the pages it shared
# with the parent before exec — here the benchmark that had just built 100,000 seed rows).
with open("/proc/self/status") as status:
    peak_kb = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({{"seconds": seconds, "status": done.status, "error": done.error, "summary": done.summary,
                  "again_seconds": again_seconds, "again_status": again.status, "peak_rss_kb": peak_kb}}))
"""


def seed(members: int) -> tuple[int, int, str]:
    """Keel's 100,000 covered members and the sandbox's drifted roster. Returns (insurer, employer, policy no.)."""
    from apps.employers.models import Coverage, Employee, Policy
    from apps.insurers.sandbox.models import SandboxRosterMember

    _, employer_id, policy_id = bench_world("recon")
    policy = Policy.objects.get(pk=policy_id)
    start = policy.start_date
    codes = [f"E{n:07d}" for n in range(members)]
    employees = Employee.objects.bulk_create(
        [
            Employee(
                employer_id=employer_id,
                employee_code=code,
                first_name="Asha",
                last_name="Rao",
                date_of_birth=date(1990, 5, 17),
                gender="female",
            )
            for code in codes
        ],
        batch_size=5000,
    )
    Coverage.objects.bulk_create(
        [Coverage(employee=e, policy=policy, sum_insured=500_000_00, start_date=start) for e in employees],
        batch_size=5000,
    )
    dropped = set(codes[:: members // 1500][:1500])
    changed_dob = set(codes[7 :: members // 1000][:1000]) - dropped
    changed_si = set(codes[11 :: members // 1000][:1000]) - dropped - changed_dob
    rows = [
        SandboxRosterMember(
            code="sandbox-rest",
            policy_number=policy.policy_number,
            employee_code=code,
            first_name="Asha",
            last_name="Rao",
            date_of_birth=date(1980, 1, 1) if code in changed_dob else date(1990, 5, 17),
            sum_insured=300_000_00 if code in changed_si else 500_000_00,
            start_date=start,
        )
        for code in codes
        if code not in dropped
    ]
    rows += [
        SandboxRosterMember(
            code="sandbox-rest",
            policy_number=policy.policy_number,
            employee_code=f"X{n:07d}",
            first_name="Ravi",
            last_name="Iyer",
            date_of_birth=date(1985, 3, 4),
            sum_insured=500_000_00,
            start_date=start + timedelta(days=1),
        )
        for n in range(1500)
    ]
    SandboxRosterMember.objects.bulk_create(rows, batch_size=5000)
    return policy.insurer_id, employer_id, policy.policy_number


def bare_read_seconds(endpoint: str, policy_number: str) -> tuple[float, int]:
    import requests

    session = requests.Session()
    rows, cursor = 0, ""
    started = time.perf_counter()
    while True:
        params = {"policy_number": policy_number, "limit": PAGE}
        if cursor:
            params["cursor"] = cursor
        body = session.get(f"{endpoint}/roster", params=params, timeout=30).json()
        rows += len(body["members"])
        cursor = body.get("next_cursor") or ""
        if not cursor:
            return time.perf_counter() - started, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--members", type=int, default=100_000)
    args = parser.parse_args()
    django_ready()
    from apps.insurers.sandbox.setup import sandbox_register

    port = free_port()
    server = start_gunicorn(port, workers=2)
    try:
        (insurer,) = sandbox_register(base_url=f"http://127.0.0.1:{port}")
        seeded = time.perf_counter()
        insurer_id, employer_id, policy_number = seed(args.members)
        print(f"seeded {args.members} members in {time.perf_counter() - seeded:.1f} s (not timed)")
        bare_s, bare_rows = bare_read_seconds(insurer.endpoint, policy_number)
        worker = subprocess.Popen(
            [
                sys.executable,
                "-c",
                WORKER.format(root=str(ROOT), insurer=insurer_id, employer=employer_id, page=PAGE),
            ],
            cwd=ROOT,
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
        )
        assert worker.stdout is not None
        output = worker.stdout.read()
        _, status, usage = os.wait4(worker.pid, 0)
        worker.returncode = os.waitstatus_to_exitcode(status)
        if worker.returncode != 0:
            sys.exit(f"the worker failed ({worker.returncode})")
        result = json.loads(output.decode().strip().splitlines()[-1])
    finally:
        server.terminate()
        server.wait(timeout=10)
    rss_mb = result["peak_rss_kb"] / 1024
    # For comparison with figures before ADR 0051: `ru_maxrss` of the child includes the parent's pages at fork.
    maxrss_at_fork_mb = usage.ru_maxrss / 1024  # Linux: kilobytes
    seconds = result["seconds"]
    summary = result["summary"]
    ok_time, ok_rss = seconds <= TARGET_SECONDS, rss_mb <= TARGET_RSS_MB
    print("\nReconciliation benchmark")
    print(f"  machine: {os.cpu_count()} cores; PostgreSQL; sandbox on gunicorn (2 workers); one worker process")
    print(f"  roster: {args.members} members in Keel, {bare_rows} at the insurer, pages of {PAGE}")
    print(f"  run {result['status']}{': ' + result['error'] if result['error'] else ''}: {json.dumps(summary)}")
    print(f"  end to end (start, pull, record, match, statement): {seconds:.2f} s")
    print(f"      limit  bare paginated read of the same rows: {bare_s:.2f} s ({seconds / bare_s:.1f}×)")
    print(
        f"  second run, the same roster pulled again (nightly; not in the target): {result['again_seconds']:.2f} s "
        f"({result['again_status']})"
    )
    print(
        f"  peak worker RSS (both runs, VmHWM): {rss_mb:.0f} MB "
        f"(ru_maxrss, which counts the benchmark's own pages shared at fork: {maxrss_at_fork_mb:.0f} MB)"
    )
    print(
        f"  targets: ≤ {TARGET_SECONDS:.0f} s {'MET' if ok_time else 'MISSED'}, "
        f"RSS ≤ {TARGET_RSS_MB:.0f} MB {'MET' if ok_rss else 'MISSED'}"
    )
    if result["status"] != "COMPLETED" or not (ok_time and ok_rss):
        sys.exit(1)


if __name__ == "__main__":
    main()
