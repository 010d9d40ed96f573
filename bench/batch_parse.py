"""What reading a batch and pricing it exactly cost (issue 8 part B; ADRs 0017, 0018).

    .venv/bin/python bench/batch_parse.py [--repeat 5]

No database or Redis is touched. Each figure is the best of `--repeat` runs, compared with a limit measured in
the same run:

(a) a 10,000- and a 50,000-row CSV upload through `read_csv` + `draft_from_csv_row` (decoding, header checks,
    cell counts, control characters, the e-mail validator, dates, money, gender) against `csv.reader` over the
    same bytes — tokenising the file, the least work any CSV import must do. Also the peak Python heap of
    reading the 50,000-row file (tracemalloc), against the size of the file itself.
(b) the same rows as a JSON batch through `draft_from_request` against `json.loads` of the body.
(c) 10,000 exact quotes (`pricing.quote`, integer-ratio arithmetic) against the same formula in 28-digit
    `Decimal` (what it replaced, and which rounded 0.855 to 0.85).

Targets, as ratios to the limit of the same run (absolute times move with the machine's load, which is
printed): CSV reading ≤ 20× `csv.reader`, JSON rows ≤ 6× `json.loads`, exact pricing ≤ 3× the Decimal formula.
The absolute time of reading and pricing a 10,000-row batch is printed against a quarter of the 2 s that SPEC
§12 allows for accepting and persisting the whole batch, for reference.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
import tracemalloc
from collections.abc import Callable
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import setup_environment

BUDGET_SECONDS = 0.5  # a quarter of SPEC §12's 2 s for a 10,000-row batch (reported)
TARGETS = {"CSV": 20.0, "JSON": 6.0, "pricing": 3.0}  # ratio to the same run's limit
HEADER = "employee_code,first_name,last_name,date_of_birth,gender,email,type,effective_date,sum_insured"


def best_of(repeat: int, fn: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def csv_bytes(rows: int) -> bytes:
    lines = [HEADER]
    for i in range(rows):
        gender = ("M", "female", "O")[i % 3]
        lines.append(f"E-{i},Asha,Rao,1990-05-{1 + i % 28:02d},{gender},e{i}@example.com,addition,2026-06-01,300000.00")
    return ("\r\n".join(lines) + "\r\n").encode()


def json_rows(rows: int) -> bytes:
    body = {
        "employer": 1,
        "policy": 1,
        "rows": [
            {
                "type": "addition",
                "effective_date": "2026-06-01",
                "sum_insured": "300000.00",
                "employee": {
                    "employee_code": f"E-{i}",
                    "first_name": "Asha",
                    "last_name": "Rao",
                    "date_of_birth": f"1990-05-{1 + i % 28:02d}",
                    "gender": "female",
                    "email": f"e{i}@example.com",
                },
            }
            for i in range(rows)
        ],
    }
    return json.dumps(body).encode()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    setup_environment()
    import django

    django.setup()
    from apps.endorsements.parsing import draft_from_csv_row, draft_from_request, read_csv
    from apps.endorsements.pricing import quote

    print(f"best of {args.repeat} runs each; load average at the start {os.getloadavg()[0]:.1f}")
    ratios: dict[str, float] = {}

    # (a) CSV
    for rows in (10_000, 50_000):
        content = csv_bytes(rows)

        def tokenise(content: bytes = content) -> None:
            for _ in csv.reader(io.StringIO(content.decode("utf-8-sig"), newline="")):
                pass

        def parse(content: bytes = content) -> None:
            for row in read_csv(content):
                assert not row.errors
                draft_from_csv_row(row.cells)

        raw = best_of(args.repeat, tokenise)
        ours = best_of(args.repeat, parse)
        print(
            f"(a) CSV {rows:,} rows ({len(content) / 2**20:.1f} MiB): read + parse {ours * 1000:.0f} ms; "
            f"csv.reader alone {raw * 1000:.0f} ms (ratio {ours / raw:.1f}×)"
        )
        if rows == 10_000:
            csv_10k = ours
            ratios["CSV"] = ours / raw
        else:
            tracemalloc.start()
            parse()
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(
                f"    peak Python heap reading the 50,000-row file: {peak / 2**20:.0f} MiB "
                f"({peak / len(content):.1f}× the file)"
            )

    # (b) JSON rows
    body = json_rows(10_000)
    loads = best_of(args.repeat, lambda: json.loads(body))
    decoded = json.loads(body)["rows"]
    json_parse = best_of(args.repeat, lambda: [draft_from_request(r) for r in decoded])
    ratios["JSON"] = json_parse / loads
    print(
        f"(b) JSON 10,000 rows: draft_from_request {json_parse * 1000:.0f} ms; json.loads of the body "
        f"{loads * 1000:.0f} ms (ratio {json_parse / loads:.1f}×)"
    )

    # (c) pricing
    start, end = date(2026, 4, 1), date(2027, 3, 31)
    cases = [(300_000_00 + 137 * i, start + timedelta(days=i % 365)) for i in range(10_000)]
    rate = Decimal("4.5")

    def exact() -> None:
        for si, effective in cases:
            quote(
                kind="addition",
                rate_per_mille=rate,
                policy_start=start,
                policy_end=end,
                effective_date=effective,
                sum_insured_new=si,
            )

    def decimal_formula() -> None:
        term = Decimal((end - start).days + 1)
        for si, effective in cases:
            remaining = Decimal((end - effective).days + 1)
            annual = Decimal(si) / 100 * rate / 1000
            (annual * (remaining / term)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)

    exact_s = best_of(args.repeat, exact)
    decimal_s = best_of(args.repeat, decimal_formula)
    ratios["pricing"] = exact_s / decimal_s
    print(
        f"(c) 10,000 exact quotes (integer ratios) {exact_s * 1000:.0f} ms; the 28-digit Decimal formula "
        f"{decimal_s * 1000:.0f} ms (ratio {exact_s / decimal_s:.1f}×)"
    )

    for name, parse_s in (("CSV", csv_10k), ("JSON", json_parse)):
        total = parse_s + exact_s
        print(
            f"10,000-row {name} batch read + priced: {total * 1000:.0f} ms ({total / BUDGET_SECONDS:.1f}× a quarter "
            "of SPEC §12's 2 s; reported)"
        )
    met = True
    for name, target in TARGETS.items():
        ok = ratios[name] <= target
        met &= ok
        print(f"{name}: ratio {ratios[name]:.1f}× (target ≤ {target:.0f}×): {'MET' if ok else 'MISSED'}")
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
