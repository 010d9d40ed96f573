"""Old code against new code, interleaved (issue 9): "no `make bench` figure gets worse beyond the noise".

Runs each benchmark alternately in an OLD and a NEW checkout — old, new, old, new, … `--runs` times each — so
both see the same machine state (load from other work drifts over minutes; interleaving spreads it over both
sides), then prints per benchmark and figure the median of each side and the ratio new/old. A figure
"got worse" when its ratio is above `--bound` (default 1.25) in the bad direction (more seconds, fewer per
second).

Each side runs its own scripts on its own code, against its own PostgreSQL databases (`keel_cmp_<side>_<bench>`,
created and migrated by that side's code before the first run) and its own Redis database. Files of the new
benchmark harness that the old checkout lacks (e.g. `bench/request_cost.py`, issue 15, which came after the old
commit) are copied into the old checkout with `--overlay`: make it a throwaway worktree.

    git worktree add /work/wt/old9 64b60df --detach && ln -s "$PWD/.venv" /work/wt/old9/.venv
    .venv/bin/python bench/compare_interleaved.py --old /work/wt/old9 --new . --runs 5 --overlay \
        [--benches endorsement_pipeline,endorsement_api,loan_pipeline,request_cost] [--redis-db 9]
    git worktree remove --force /work/wt/old9

Each benchmark's figures are read from its printed report with the patterns in `BENCHES` (first match);
`request_cost` counts instructions (deterministic), so it runs once per side.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    name: str
    pattern: str  # a regular expression whose first group is the number (commas allowed)
    higher_is_better: bool


@dataclass(frozen=True)
class Bench:
    script: str
    args: tuple[str, ...]
    figures: tuple[Figure, ...]
    runs: int | None = None  # None: --runs


BENCHES: dict[str, Bench] = {
    "endorsement_pipeline": Bench(
        "bench/endorsement_pipeline.py",
        ("--endorsements", "2000", "--employers", "10", "--workers", "2", "--protocols", "rest,soap,file"),
        (Figure("upload → all terminal, s", r"upload → all terminal in ([\d.,]+) s", False),),
    ),
    "endorsement_api": Bench(
        "bench/endorsement_api.py",
        ("--rate", "100", "--seconds", "5", "--rows", "10000"),
        (
            # Before issue 15: one run, "p95 … ms   p99 … ms"; since: 5 runs, their median in "POST p99: median … ms".
            Figure("single POST p99, ms", r"(?:p95 [\d.]+ ms\s+p99|POST p99: median) ([\d.,]+) ms", False),
            Figure("10,000-row batch, s", r"persisted with outbox rows: ([\d.,]+) s", False),
        ),
    ),
    "loan_pipeline": Bench(
        "bench/loan_pipeline.py",
        ("--seconds", "8"),
        # Before issue 15: "POST → decided (exact): p50 … ms p95 … ms"; since: the median of 5 runs' p95.
        (
            Figure(
                "POST → decided p95, ms",
                r"POST → decided (?:\(exact\):\s+p50 [\d.]+ ms\s+p95|p95: median) ([\d.,]+) ms",
                False,
            ),
        ),
    ),
    "request_cost": Bench(
        "bench/request_cost.py",
        ("--requests", "20", "--rounds", "3"),
        (
            Figure("POST /endorsements, instructions", r"POST /endorsements\s+([\d,]+)", False),
            Figure("POST /loan-applications, instructions", r"POST /loan-applications\s+([\d,]+)", False),
            Figure("GET /endorsements/{id}, instructions", r"GET /endorsements/\{id\}\s+([\d,]+)", False),
        ),
        runs=1,
    ),
}

# The new harness files an old checkout may lack (copied with --overlay, never over an existing file except
# `_common.py`, whose new version only adds helpers).
OVERLAY = (
    "bench/request_cost.py",
    "bench/limits.py",
    "bench/urls.py",
    "bench/cgmark.c",
    "bench/_common.py",
    "config/settings/bench.py",
)


def overlay(old: Path, new: Path) -> list[str]:
    copied = []
    for rel in OVERLAY:
        target = old / rel
        if rel.endswith("_common.py") or not target.exists():
            shutil.copyfile(new / rel, target)
            copied.append(rel)
    return copied


def env_for(side: str, bench: str, redis_db: int) -> dict[str, str]:
    env = dict(os.environ)
    env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/keel_cmp_{side}_{bench}"
    env["REDIS_URL"] = f"redis://127.0.0.1:6379/{redis_db}"
    env["TEST_REDIS_URL"] = env["REDIS_URL"]
    return env


def prepare(tree: Path, side: str, bench: str, redis_db: int) -> None:
    """A fresh database for this side and benchmark, migrated by this side's code."""
    env = env_for(side, bench, redis_db)
    subprocess.run(
        ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", f"keel_cmp_{side}_{bench}"], check=True
    )
    subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", f"keel_cmp_{side}_{bench}"], check=True)
    subprocess.run(
        [str(tree / ".venv/bin/python"), "manage.py", "migrate", "-v0"],
        cwd=tree,
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings.local"},
        check=True,
    )


def run_once(tree: Path, side: str, name: str, bench: Bench, redis_db: int, log: Path) -> dict[str, float]:
    env = env_for(side, name, redis_db)
    started = time.time()
    done = subprocess.run(
        [str(tree / ".venv/bin/python"), bench.script, *bench.args],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    out = done.stdout + done.stderr
    with log.open("a") as f:
        f.write(f"\n===== {name} {side} {time.strftime('%H:%M:%S')} ({time.time() - started:.0f} s) =====\n{out}")
    figures: dict[str, float] = {}
    for figure in bench.figures:
        match = re.search(figure.pattern, out)
        if match:
            figures[figure.name] = float(match.group(1).replace(",", ""))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="checkout of the old commit")
    parser.add_argument("--new", type=Path, default=Path("."), help="checkout of the new code")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--benches", default=",".join(BENCHES))
    parser.add_argument("--bound", type=float, default=1.25)
    parser.add_argument("--redis-db", type=int, default=9)
    parser.add_argument("--overlay", action="store_true", help="copy missing harness files into --old")
    parser.add_argument("--log", type=Path, default=Path("/tmp/keel-compare-interleaved.log"))
    args = parser.parse_args()
    trees = {"old": args.old.resolve(), "new": args.new.resolve()}
    if args.overlay:
        print("copied into the old checkout:", ", ".join(overlay(trees["old"], trees["new"])) or "nothing")
    names = [n.strip() for n in args.benches.split(",") if n.strip()]
    unknown = set(names) - set(BENCHES)
    if unknown:
        sys.exit(f"unknown benchmarks: {', '.join(sorted(unknown))}")
    results: dict[str, dict[str, dict[str, list[float]]]] = {}
    for name in names:
        bench = BENCHES[name]
        for side, tree in trees.items():
            if not (tree / bench.script).exists():
                print(f"{name}: {side} has no {bench.script}; skipped")
                break
        else:
            for side, tree in trees.items():
                prepare(tree, side, name, args.redis_db)
            runs = bench.runs or args.runs
            per_side: dict[str, dict[str, list[float]]] = {"old": {}, "new": {}}
            for i in range(runs):
                for side in ("old", "new") if i % 2 == 0 else ("new", "old"):
                    figures = run_once(trees[side], side, name, bench, args.redis_db, args.log)
                    for figure, value in figures.items():
                        per_side[side].setdefault(figure, []).append(value)
                    print(f"  {name} run {i + 1}/{runs} {side}: {figures}", flush=True)
            results[name] = per_side
    worse = 0
    print(f"\nInterleaved old/new (median of each side; bound new/old ≤ {args.bound}× in the bad direction)")
    print(f"  old: {trees['old']}\n  new: {trees['new']}")
    for name, per_side in results.items():
        for figure in BENCHES[name].figures:
            old_values = per_side["old"].get(figure.name, [])
            new_values = per_side["new"].get(figure.name, [])
            if not old_values or not new_values:
                print(f"  {name:22} {figure.name:40} not measured (old {old_values}, new {new_values})")
                continue
            old_median, new_median = statistics.median(old_values), statistics.median(new_values)
            ratio = new_median / old_median if old_median else float("inf")
            badness = 1 / ratio if figure.higher_is_better else ratio
            ok = badness <= args.bound
            worse += not ok
            print(
                f"  {name:22} {figure.name:40} old {old_median:>14,.1f}  new {new_median:>14,.1f}  "
                f"new/old {ratio:5.2f}  n={len(old_values)}/{len(new_values)}  {'ok' if ok else 'WORSE'}"
            )
    print(f"  log of every run: {args.log}")
    return 1 if worse else 0


if __name__ == "__main__":
    raise SystemExit(main())
