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


def run_worker(script: str, *args: str, multiproc_dir) -> str:  # type: ignore[no-untyped-def]
    """Run `script` in a fresh Python process set up like a Celery worker (multiprocess metrics into
    `multiproc_dir`, this test's database); returns its stdout."""
    env = {
        **os.environ,
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir),
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        # The worker connects to this test's database (committed rows: a transactional test).
        "DATABASE_URL": f"postgres://{connection.settings_dict['USER']}@{connection.settings_dict['HOST']}:"
        f"{connection.settings_dict['PORT'] or 5432}/{connection.settings_dict['NAME']}",
        "TEST_DATABASE_NAME": connection.settings_dict["NAME"],
    }
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_metrics_scraped_on_web_include_work_done_in_a_worker_process(client, tmp_path, monkeypatch):
    employer = EmployerFactory()
    stdout = run_worker(WORKER, str(employer.pk), multiproc_dir=tmp_path)
    topics = stdout.strip().splitlines()[-1].split(",")
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


# Insurer calls through the breaker (one answered, one failing) and a webhook answered 500 then 200, the way
# the gateway and the dispatcher run them in a worker.
INSURER_AND_WEBHOOK_WORKER = textwrap.dedent(
    """
    import django
    django.setup()
    from django.conf import settings
    from django.utils import timezone
    from apps.insurers.contracts import TransientInsurerError
    from apps.insurers.resilience import circuit_reset, guarded_call
    from apps.partners.tests.factories import PartnerFactory
    from apps.partners.tests.webhook_helpers import endpoint_for, record
    from apps.partners.webhooks.dispatch import dispatch_once
    from apps.partners.webhooks.models import WebhookDelivery, WebhookEndpoint
    from apps.partners.webhooks.receiver import Receiver

    circuit_reset("mp-insurer")
    assert guarded_call("mp-insurer", lambda n: n + 1, 1) == 2

    def failing():
        raise TransientInsurerError("insurer down")

    try:
        guarded_call("mp-insurer", failing)
    except TransientInsurerError:
        pass
    circuit_reset("mp-insurer")

    settings.WEBHOOKS_ALLOW_LOCAL_HTTP = True
    partner = PartnerFactory()
    answers = iter([500, 200])
    with Receiver(respond=lambda _r: (next(answers), {}, b"")) as receiver:
        endpoint, _ = endpoint_for(partner.pk, receiver.url)
        record(partner.pk)
        first = dispatch_once()
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(retry_at=timezone.now())
        WebhookDelivery.objects.filter(endpoint=endpoint).update(next_attempt_at=timezone.now())
        second = dispatch_once()
    print(first, second)
    """
)


def test_insurer_calls_and_webhook_deliveries_made_in_a_worker_show_on_web(client, tmp_path, monkeypatch):
    stdout = run_worker(INSURER_AND_WEBHOOK_WORKER, multiproc_dir=tmp_path)
    assert stdout.strip().splitlines()[-1] == "0 1"  # 500 (retry), then 200 (delivered)

    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    text = client.get("/metrics").content.decode()

    assert sample(text, "keel_insurer_calls_total", insurer="mp-insurer", outcome="ok") == 1.0
    assert sample(text, "keel_insurer_calls_total", insurer="mp-insurer", outcome="error") == 1.0
    assert sample(text, "keel_insurer_calls_total", insurer="mp-insurer", outcome="circuit_open") is None
    assert sample(text, "keel_insurer_call_seconds_count", insurer="mp-insurer", outcome="ok") == 1.0
    assert sample(text, "keel_insurer_call_seconds_count", insurer="mp-insurer", outcome="error") == 1.0
    assert sample(text, "keel_webhook_deliveries_total", outcome="retry") == 1.0
    assert sample(text, "keel_webhook_deliveries_total", outcome="delivered") == 1.0
    assert sample(text, "keel_webhook_deliveries_total", outcome="failed") is None
