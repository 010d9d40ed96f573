"""What the API edge costs (ADR 0015): the JSON nesting guard and the four edge middlewares.

    .venv/bin/python bench/input_edge.py [--repeat 5]

No database or Redis is touched. Each figure is compared with a limit measured in the same run:

(a) the nesting guard (`json_nesting_exceeds`, limit 32) on bodies the API really receives — a single
    endorsement (~0.4 KB), a 10,000-row JSON batch (~2 MB) and a 50,000-row batch (~10 MB, the largest the
    batch endpoint takes), and a worst case whose every name holds an escape and brackets (reported, not
    judged) — against `json.loads` of the same body, the least work any endpoint that reads it
    must do anyway. Target: the guard costs at most half a parse (ratio ≤ 0.5).
(b) the 25 KB body nested 5,000 levels (issue 8, kind 4): the time to refuse it, against the time
    `json.loads` needs to fail on it with `RecursionError`.
(c) the four edge middlewares around a view that does nothing, per request with a 0.4 KB JSON body, against
    building that request with Django's `RequestFactory` (the floor of any request). Reported, not judged.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import setup_environment

TARGET_RATIO = 0.5


def best_of(repeat: int, fn: Callable[[], Any]) -> float:
    """Best wall time of `repeat` runs, in seconds (the least disturbed by other work on the machine)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def row(i: int, *, awkward: bool = False) -> dict[str, Any]:
    """One batch row as HR platforms send it; `awkward` puts an escape and brackets into a name (worst case)."""
    return {
        "type": "addition",
        "effective_date": "2026-06-01",
        "employee": {
            "employee_code": f"E-{i:06d}",
            "first_name": "Asha",
            "last_name": 'Rao \\ "[x]"' if awkward else "Rao",
            "date_of_birth": "1990-05-17",
            "gender": "female",
            "email": f"e{i}@example.com",
        },
        "sum_insured": "500000.00",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    setup_environment()
    import django

    django.setup()
    from django.http import HttpResponse
    from django.test import RequestFactory

    from apps.common.middleware import (
        ApiProblemMiddleware,
        JsonNestingGuardMiddleware,
        RequestIdMiddleware,
        RequestSizeLimitMiddleware,
    )
    from apps.common.parsers import json_nesting_exceeds

    single = json.dumps({"employer": 1, "policy": 1, **row(1)}).encode()
    bodies = {
        "single endorsement": single,
        "10,000-row batch": json.dumps({"employer": 1, "policy": 1, "rows": [row(i) for i in range(10_000)]}).encode(),
        "50,000-row batch": json.dumps({"employer": 1, "policy": 1, "rows": [row(i) for i in range(50_000)]}).encode(),
        "10,000 awkward rows": json.dumps(
            {"employer": 1, "policy": 1, "rows": [row(i, awkward=True) for i in range(10_000)]}
        ).encode(),
    }
    missed = False
    print(f"(a) nesting guard vs json.loads of the same body (best of {args.repeat})")
    for name, body in bodies.items():
        assert not json_nesting_exceeds(body, 32)
        n = 2000 if len(body) < 10_000 else 1
        guard = best_of(args.repeat, lambda b=body, n=n: [json_nesting_exceeds(b, 32) for _ in range(n)]) / n
        parse = best_of(args.repeat, lambda b=body, n=n: [json.loads(b) for _ in range(n)]) / n
        ratio = guard / parse
        missed |= ratio > TARGET_RATIO and "awkward" not in name
        print(
            f"    {name:<20} {len(body) / 1e6:7.3f} MB  guard {guard * 1e3:9.3f} ms  json.loads {parse * 1e3:9.3f} ms"
            f"  ratio {ratio:.2f} (target ≤ {TARGET_RATIO})"
        )

    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000

    def loads_deep() -> None:
        try:
            json.loads(deep)
        except RecursionError:
            return
        raise AssertionError("json.loads parsed 5,000 levels")

    refuse = best_of(args.repeat, lambda: [json_nesting_exceeds(deep, 32) for _ in range(100)]) / 100
    fail = best_of(args.repeat, lambda: [loads_deep() for _ in range(100)]) / 100
    assert json_nesting_exceeds(deep, 32)
    print(
        f"(b) 25 KB nested 5,000 levels: refused in {refuse * 1e3:.3f} ms; "
        f"json.loads fails with RecursionError after {fail * 1e3:.3f} ms (ratio {refuse / fail:.2f})"
    )

    factory = RequestFactory()

    def view(request: Any) -> HttpResponse:
        return HttpResponse(b"{}", content_type="application/json")

    edge = RequestIdMiddleware(ApiProblemMiddleware(RequestSizeLimitMiddleware(JsonNestingGuardMiddleware(view))))
    n = 2000

    def build() -> None:
        for _ in range(n):
            factory.post("/api/v1/endorsements", single, content_type="application/json")

    def through_edge() -> None:
        for _ in range(n):
            edge(factory.post("/api/v1/endorsements", single, content_type="application/json"))

    floor = best_of(args.repeat, build) / n
    total = best_of(args.repeat, through_edge) / n
    print(
        f"(c) edge middlewares per request: {(total - floor) * 1e6:.1f} µs "
        f"(building the request alone: {floor * 1e6:.1f} µs; ratio {(total - floor) / floor:.2f})"
    )
    if missed:
        print(f"MISSED: the guard cost more than {TARGET_RATIO} of a parse on some body")
        sys.exit(1)


if __name__ == "__main__":
    main()
