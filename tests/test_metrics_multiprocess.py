"""/metrics on the web process shows work done in another process (prometheus_client multiprocess mode).

A real second Python process — set up like a Celery worker, with `PROMETHEUS_MULTIPROC_DIR` set before
anything imports prometheus_client — posts a top-up and consumes its outbox events; then this process's
`/metrics` (the web side) must report the ledger transaction, the consumer latency of the topic it ran, and
the scrape-time state, once each.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest
from django.conf import settings
from django.db import connection

from apps.employers.tests.factories import EmployerFactory

pytestmark = pytest.mark.django_db(transaction=True)

WORKER = textwrap.dedent(
    """
    import os, sys
    import django
    django.setup()
    from apps.common.actors import Actor
    from apps.ledger.services import topup_post
    from apps.outbox.testing import drain

    topup_post(employer_id=int(sys.argv[1]), amount=250000, reference="metrics-mp-1", actor=Actor.system("worker"))
    delivered = drain()
    print(",".join(sorted({m.topic for m in delivered})))
    """
)


def sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        head, _, value = line.rpartition(" ")
        if head.split("{")[0] != name:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', head))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(value)
    return None


def test_metrics_scraped_on_web_include_work_done_in_a_worker_process(client, tmp_path, monkeypatch):
    employer = EmployerFactory()
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        # The worker connects to this test's database (committed rows: a transactional test).
        "DATABASE_URL": f"postgres://{connection.settings_dict['USER']}@{connection.settings_dict['HOST']}:"
        f"{connection.settings_dict['PORT'] or 5432}/{connection.settings_dict['NAME']}",
        "TEST_DATABASE_NAME": connection.settings_dict["NAME"],
    }
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(employer.pk)],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    topics = done.stdout.strip().splitlines()[-1].split(",")
    assert "ledger.funds_available" in topics
    assert any(f.name.startswith(("counter_", "histogram_")) for f in tmp_path.iterdir())

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = client.get("/metrics").content.decode()

    assert sample(text, "keel_ledger_transactions_total", kind="topup") == 1.0
    assert sample(text, "keel_outbox_consumer_seconds_count", topic="ledger.funds_available", outcome="ok") == 1.0
    assert sample(text, "keel_ledger_low_balance_accounts") == 0.0
    assert sample(text, "keel_outbox_pending") == 0.0
    # Series appear once: the merged files and the scrape-time collectors do not repeat each other.
    assert len(re.findall(r"^keel_ledger_transactions_total\{", text, re.M)) == 1
