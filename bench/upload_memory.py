"""Web-process memory of a 50,000-row CSV upload (SPEC §12, issue 15 part 4): peak RSS ≤ 250 MB.

Starts gunicorn with ONE sync worker (so the worker that parses the upload is known), warms it with a small
upload, then POSTs a 50,000-row CSV to `/api/v1/endorsement-batches` (multipart, as a partner would) and reads
the worker's peak resident set (`VmHWM` in /proc/<pid>/status, the kernel's high-water mark since the worker
started) and its RSS before and after. The file's own size is printed beside them; the limit of the same run is
the worker's RSS before the upload (what Django, DRF and Keel's code take at rest).

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/keel_bench_upload REDIS_URL=redis://127.0.0.1:6379/14 \
        .venv/bin/python bench/upload_memory.py [--rows 50000]

Linux only (/proc). Exit status 1 when the target is missed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import bench_world, django_ready, free_port, setup_environment, start_gunicorn

os.environ["OUTBOX_NUDGE_ON_COMMIT"] = "false"
# A 50,000-row batch borrows pooled connections for its parallel chunks (ADR 0043); on a loaded machine the
# default 1.5 s wait for one would answer 503 and measure nothing.
os.environ.setdefault("DATABASE_POOL_TIMEOUT", "30")
setup_environment()

TARGET_PEAK_MB = 250.0
HEADER = "employee_code,first_name,last_name,date_of_birth,gender,email,type,effective_date,sum_insured"


def csv_bytes(rows: int, run: str, effective: str) -> bytes:
    lines = [HEADER]
    for i in range(rows):
        gender = ("M", "female", "O")[i % 3]
        lines.append(
            f"M{run}-{i},Asha,Rao,1990-05-{1 + i % 28:02d},{gender},e{i}.{run}@example.com,addition,{effective},"
            "300000.00"
        )
    return ("\r\n".join(lines) + "\r\n").encode()


def status_mb(pid: int, field: str) -> float:
    """`VmRSS` / `VmHWM` of a process, in MB (the kernel reports kB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise SystemExit(f"no {field} for pid {pid}")


def worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    if len(children) != 1:
        raise SystemExit(f"expected one gunicorn worker, found {children}")
    return int(children[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000)
    args = parser.parse_args()
    django_ready()
    import requests
    from django.utils import timezone

    key, employer, policy = bench_world("upload", rate_limit=10_000_000)
    effective = timezone.localdate().isoformat()
    port = free_port()
    load_before = os.getloadavg()
    server = start_gunicorn(port, workers=1)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Api-Key {key}"}
    form = {"employer": str(employer), "policy": str(policy)}
    try:
        pid = worker_pid(server.pid)

        def upload(content: bytes) -> tuple[int, str, float]:
            started = time.perf_counter()
            response = requests.post(
                f"{base}/api/v1/endorsement-batches",
                data=form,
                files={"file": ("members.csv", content, "text/csv")},
                headers=headers,
                timeout=600,
            )
            return response.status_code, response.text[:300], time.perf_counter() - started

        status, text, _ = upload(csv_bytes(200, "warm", effective))  # imports, pools, first batch
        if status != 202:
            raise SystemExit(f"warm-up upload answered {status}: {text}")
        content = csv_bytes(args.rows, f"r{os.getpid()}", effective)
        rest = status_mb(pid, "VmRSS")
        status, text, seconds = upload(content)
        peak, after = status_mb(pid, "VmHWM"), status_mb(pid, "VmRSS")
    finally:
        server.terminate()
        server.wait(timeout=20)
    if status != 202:
        raise SystemExit(f"the {args.rows:,}-row upload answered {status}: {text}")
    ok = peak <= TARGET_PEAK_MB
    print(f"\nCSV upload memory, one gunicorn sync worker (pid {pid}); machine {os.cpu_count()} cores, "
          f"load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after")  # fmt: skip
    print(f"  file: {args.rows:,} rows, {len(content) / 1_048_576:.1f} MB; accepted in {seconds:.1f} s")
    print(f"  limit  worker RSS at rest (after a 200-row warm-up upload): {rest:.0f} MB")
    print(f"  worker peak RSS (VmHWM) {peak:.0f} MB = rest + {peak - rest:.0f} MB "
          f"({(peak - rest) / (len(content) / 1_048_576):.1f}× the file); RSS after {after:.0f} MB")  # fmt: skip
    print(f"  target peak ≤ {TARGET_PEAK_MB:.0f} MB: {'MET' if ok else 'MISSED'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
