"""Fault drills run only under `make faults` (KEEL_FAULT_DRILLS=1), never in plain `make test`.

They are not skipped elsewhere — they are not collected: CI fails on any skipped test, and `.ci/run` runs
`make faults` as its own step, which fails CI when a drill fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

if os.environ.get("KEEL_FAULT_DRILLS") != "1":
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def drill_cluster() -> Iterator[object]:
    from tests.faults.harness import cluster

    with cluster() as c:
        yield c


@pytest.fixture(scope="session")
def drill_report() -> Iterator[list[str]]:
    lines: list[str] = []
    yield lines
    if lines:
        os.makedirs("var", exist_ok=True)
        with open("var/faults-report.txt", "w") as handle:
            handle.write("\n".join(lines) + "\n")
        print("\n== fault drill figures (var/faults-report.txt)\n" + "\n".join(lines))
