"""Helpers shared by the benchmark scripts (each script is run directly: `python bench/<name>.py`)."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def bench_key(label: str) -> str:
    """A fixed bench-only secret (base64 of SHA-256 of `keel-bench-only:<label>`), never a production one."""
    return base64.b64encode(hashlib.sha256(f"keel-bench-only:{label}".encode()).digest()).decode()


def set_bench_pan_keys() -> None:
    """PAN encryption and blind-index keys for benches that run with DEBUG off (which refuses to derive them); the
    web server and the workers inherit them, so they share the keys."""
    os.environ.setdefault("PAN_ENCRYPTION_KEYS", f"1:{bench_key('pan-1')}")
    os.environ.setdefault("PAN_BLIND_INDEX_KEY", bench_key("blind-index"))


def setup_environment() -> None:
    """Local settings, quiet logs, no on-commit nudges (the benches drive or measure relays themselves)."""
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
    os.environ.setdefault("DJANGO_DEBUG", "false")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ.setdefault("OUTBOX_NUDGE_ON_COMMIT", "false")
    os.environ.setdefault("SANDBOX_INSURER_ENABLED", "true")
    # DJANGO_DEBUG=false refuses to derive development keys: the benches seal insurers' callback secrets with a
    # fixed bench-only key (ADR 0044), never a production one.
    os.environ.setdefault("INSURER_CALLBACK_SECRETS_KEY", bench_key("insurer-callback-secrets"))


def require_postgres_and_redis() -> None:
    if not os.environ.get("DATABASE_URL", "").startswith("postgres") or not os.environ.get("REDIS_URL"):
        sys.exit("This benchmark needs PostgreSQL and Redis: set DATABASE_URL=postgres://… and REDIS_URL=redis://…")


def django_ready() -> None:
    """The set-up every database bench starts with: PostgreSQL and Redis required, Django set up, migrations
    applied."""
    require_postgres_and_redis()
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def median_and_worst(values: list[float], unit: str, *, digits: int = 1) -> str:
    """`median <v><unit>, worst <v><unit>` of one figure over the repeated runs of a latency bench (SPEC §12:
    repeat 5 times, report the worst; "worst" is the largest)."""
    return f"median {statistics.median(values):.{digits}f}{unit}, worst {max(values):.{digits}f}{unit}"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))]


def latency_ratio(limit_ms: list[float], measured_ms: list[float]) -> float:
    """One latency round's verdict: the measured path's p99 ÷ the p99 of the limit measured in the same round."""
    return percentile(measured_ms, 99) / max(percentile(limit_ms, 99), 1e-9)


def worst_latency_round(rounds: list[tuple[list[float], list[float]]]) -> tuple[float, float, float, float]:
    """Latency rounds `(limit samples, measured samples)` judged round by round, each against its own limit (a
    round slow for both paths is load, not the path): `(limit p99, p50, p99, ratio)` of the worst ratio's round."""
    limit_ms, measured_ms = max(rounds, key=lambda r: latency_ratio(*r))
    return (
        percentile(limit_ms, 99),
        percentile(measured_ms, 50),
        percentile(measured_ms, 99),
        latency_ratio(limit_ms, measured_ms),
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_gunicorn(port: int, *, workers: int = 3, threads: int = 1) -> subprocess.Popen[bytes]:
    """Serve this project on 127.0.0.1:port and wait until /health answers."""
    import requests

    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "config.wsgi:application",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--threads",
            str(threads),
            "--log-level",
            "warning",
            "--timeout",
            "120",
        ],
        cwd=ROOT,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(200):
        try:
            if requests.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return server
        except requests.RequestException:
            time.sleep(0.1)
    server.terminate()
    sys.exit("the benchmark server did not start")


def bench_world(label: str, *, rate_limit: int = 100_000_000) -> tuple[str, int, int]:
    """A partner (rate limits out of the way) with an all-scopes API key, an employer with a funded CD account and
    an active policy on the REST sandbox insurer. Returns (API key, employer id, policy id)."""
    import uuid
    from datetime import date, timedelta
    from decimal import Decimal

    from apps.common.actors import Actor
    from apps.employers.models import Policy
    from apps.employers.services import employer_create
    from apps.insurers.models import Insurer
    from apps.ledger.services import topup_post
    from apps.partners.models import Partner, Scope
    from apps.partners.services import api_key_create

    actor = Actor.system("bench")
    run = uuid.uuid4().hex[:8]
    partner = Partner.objects.create(
        name=f"bench-{label}-{run}",
        rate_limit_per_minute=rate_limit,
        rate_limit_per_hour=rate_limit,
        rate_limit_per_day=rate_limit,
    )
    employer = employer_create(
        partner_id=partner.pk,
        name=f"Bench {label}",
        external_ref=f"B-{run}",
        actor=actor,
        velocity_limit_per_hour=10**9,
    )
    insurer, _ = Insurer.objects.get_or_create(code="sandbox-rest", defaults={"name": "Sandbox"})
    today = date.today()
    policy = Policy.objects.create(
        employer=employer,
        insurer=insurer,
        policy_number=f"BENCH-{label.upper()}-{run}",
        start_date=today - timedelta(days=10),
        end_date=today + timedelta(days=355),
        premium_rate_per_mille=Decimal("4.5"),
        default_sum_insured=300_000_00,
    )
    topup_post(employer_id=employer.pk, amount=10**13, reference=f"bench-{label}-{run}", actor=actor)
    _, key = api_key_create(partner=partner, name=label, scopes=list(Scope.values), all_employers=True, actor=actor)
    return key, employer.pk, policy.pk
