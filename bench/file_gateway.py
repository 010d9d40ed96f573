"""File gateway benchmark (SPEC §12, issue 11): the file insurer's two heavy steps at 10,000 rows.

1. **Write**: a window of 10,000 SENT endorsements is dispatched to a file insurer through the real outbox
   consumer (`endorsements.dispatch` → `insurer_submit` → `FileGateway`): the submission log, the JSONL batch
   file and its manifest (SHA-256, row count), written atomically (temp, fsync, rename; manifest last), and
   the exchange-log row. Target ≤ 3 s. Limit in the same run: a bare write of the same bytes (open, write,
   fsync, rename) — the ratio shows Keel's own overhead.
2. **Import**: the sandbox file insurer answers (not timed), then the result file is imported by the beat job's
   service (manifest, checksum and row count verified, the file claimed once, the submission log updated,
   `insurer.results_received` chunks enqueued) and the endorsements consumer applies those chunks: every
   endorsement CONFIRMED (future-dated, so it stops there). Target ≤ 3 s. Limit in the same run: one raw
   `UPDATE … COMMIT` of the same 10,000 endorsement rows.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/keel_bench_files REDIS_URL=redis://127.0.0.1:6379/14 \\
        .venv/bin/python bench/file_gateway.py [--rows 10000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from _common import django_ready, setup_environment

setup_environment()


def bare_write_seconds(folder: Path, content: bytes) -> float:
    started = time.perf_counter()
    temp, final = folder / ".bare.tmp", folder / "bare.jsonl"
    with open(temp, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, final)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    args = parser.parse_args()
    django_ready()
    from django.db import connection

    from apps.common.actors import Actor
    from apps.employers.models import Policy
    from apps.employers.services import employer_create
    from apps.endorsements import services
    from apps.endorsements.models import Endorsement
    from apps.endorsements.parsing import draft_from_request
    from apps.insurers.files.importer import result_files_import
    from apps.insurers.models import Insurer, InsurerProtocol, ResultFile
    from apps.insurers.sandbox.files import sandbox_file_process
    from apps.insurers.sandbox.models import SandboxConfig
    from apps.ledger.services import topup_post
    from apps.outbox.models import OutboxMessage
    from apps.outbox.testing import drain
    from apps.partners.models import Partner

    actor = Actor.system("bench.files")
    run = uuid.uuid4().hex[:6]
    root = Path(tempfile.mkdtemp(prefix="keel-bench-file-gateway-"))
    code = f"bench-file-{run}"
    OutboxMessage.objects.exclude(status="done").delete()
    insurer = Insurer.objects.create(
        code=code,
        name=code,
        protocol=InsurerProtocol.FILE,
        outbound_folder=str(root / "outbound"),
        inbound_folder=str(root / "inbound"),
        batch_size=args.rows,
        batch_window_seconds=1,
        rate_limit_per_minute=100_000,
    )
    SandboxConfig.objects.update_or_create(code=code, defaults={"mode": "sync", "failure_rate": 0.0, "latency_ms": 0})
    partner = Partner.objects.create(name=f"bench-files-{run}")
    employer = employer_create(
        partner_id=partner.pk, name="Files", external_ref=f"F-{run}", actor=actor, velocity_limit_per_hour=10**7
    )
    today = date.today()
    policy = Policy.objects.create(
        employer=employer,
        insurer=insurer,
        policy_number=f"F-{run}",
        start_date=today - timedelta(days=10),
        end_date=today + timedelta(days=355),
        premium_rate_per_mille=Decimal("4.5"),
        default_sum_insured=300_000_00,
    )
    topup_post(employer_id=employer.pk, amount=10**12, reference=f"files-{run}", actor=actor)
    effective = today + timedelta(days=7)  # CONFIRMED on the insurer's answer; ACTIVE only on that date
    drafts = [
        draft_from_request(
            {
                "type": "addition",
                "effective_date": effective.isoformat(),
                "employee": {
                    "employee_code": f"F{i}",
                    "first_name": "File",
                    "last_name": "Member",
                    "date_of_birth": "1990-01-01",
                    "gender": "female",
                    "email": f"f{i}@bench.example",
                },
            }
        )
        for i in range(args.rows)
    ]
    services.endorsement_batch_create(
        employer=employer,
        policy=policy,
        drafts=drafts,
        parse_errors=[],
        source="json",
        partner_id=partner.pk,
        actor=actor,
    )
    drain()  # RECEIVED → FUNDS_LOCKED
    assert services.scheduler_tick(actor=actor, force=True) == 1  # one batch: SENT + one dispatch event
    ours = Endorsement.objects.filter(employer=employer)
    assert ours.filter(status="SENT").count() == args.rows

    # 1. Write: the dispatch consumer sends the window to the file gateway.
    started = time.perf_counter()
    delivered = drain()
    write_s = time.perf_counter() - started
    [batch] = [p for p in (root / "outbound").iterdir() if p.suffix == ".jsonl"]
    content = batch.read_bytes()
    assert content.count(b"\n") == args.rows
    bare_s = bare_write_seconds(root, content)

    # 2. Import: the sandbox answers (not timed); the import and the consumers advance every endorsement.
    assert sandbox_file_process(code=code) == 1
    started = time.perf_counter()
    counts = result_files_import(insurer_code=code)
    delivered += drain()
    import_s = time.perf_counter() - started
    confirmed = ours.filter(status="CONFIRMED").count()
    record = ResultFile.objects.get(insurer=insurer)

    ids = list(ours.values_list("id", flat=True))
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("UPDATE endorsements_endorsement SET updated_at = updated_at WHERE id = ANY(%s)", [ids])
    raw_update_s = time.perf_counter() - started
    shutil.rmtree(root, ignore_errors=True)

    print("\nFile gateway benchmark")
    print(f"  machine: {os.cpu_count()} cores; PostgreSQL; one process")
    print(
        f"  write: {args.rows:,}-row batch file ({len(content) / 1e6:.1f} MB, "
        f"sha256 {hashlib.sha256(content).hexdigest()[:12]}…) + manifest via the dispatch consumer in {write_s:.2f} s"
    )
    print(f"      limit  bare write+fsync+rename of the same bytes: {bare_s * 1000:.0f} ms ({write_s / bare_s:.0f}×)")
    print(
        f"  import: {dict(counts)}; file {record.status}, {record.applied_count:,} rows applied; "
        f"{confirmed:,}/{args.rows:,} endorsements CONFIRMED in {import_s:.2f} s"
    )
    print(
        f"      limit  one raw UPDATE…COMMIT of the same {len(ids):,} rows: {raw_update_s * 1000:.0f} ms "
        f"({import_s / raw_update_s:.0f}×)"
    )
    ok_write, ok_import = write_s <= 3, import_s <= 3 and confirmed == args.rows
    print(
        f"      targets ≤ 3 s each: write {'MET' if ok_write else 'MISSED'}, import {'MET' if ok_import else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
