"""Benchmarks only (`bench/`): local settings plus the limit endpoints of `bench/limits.py`.

`bench.urls` mounts the shipped URLconf unchanged and adds two same-run limits — a bare Django JSON view and a
bare DRF create endpoint behind the same middleware, API-key authentication and rate limiter, doing one
`INSERT … COMMIT` (issue 15). No shipped settings module points at `bench.urls`, so the limits never appear
in the served API or its OpenAPI schema (tests/test_bench_limits.py checks both).
"""

from .local import *  # noqa: F403

ROOT_URLCONF = "bench.urls"
