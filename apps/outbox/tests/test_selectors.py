"""outbox_stats, `manage.py outbox_stats` and the Prometheus metrics."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.utils import timezone
from prometheus_client import REGISTRY

from apps.outbox.metrics import register_collector
from apps.outbox.models import OutboxMessage, OutboxStatus
from apps.outbox.relay import relay_once
from apps.outbox.selectors import outbox_stats

from .conftest import Collector, enqueue


@pytest.fixture
def outbox_rows(time_machine):
    """2 pending (one due for 90 s, one in backoff), 1 inflight, 1 dead, 1 done."""
    time_machine.move_to(timezone.now(), tick=False)
    _inflight, done, dead, due, backoff = enqueue(5)
    relay_once(batch_size=1, publish=Collector())  # `inflight`
    now = timezone.now()
    OutboxMessage.objects.filter(pk=done).update(status=OutboxStatus.DONE, done_at=now)
    OutboxMessage.objects.filter(pk=dead).update(status=OutboxStatus.DEAD)
    OutboxMessage.objects.filter(pk=due).update(available_at=now - timedelta(seconds=90))
    OutboxMessage.objects.filter(pk=backoff).update(available_at=now + timedelta(minutes=5), attempts=2)


@pytest.mark.django_db
def test_outbox_stats_counts_by_status_and_measures_the_oldest_due_row(outbox_rows, django_assert_num_queries):
    with django_assert_num_queries(1):
        cheap = outbox_stats(include_done=False)

    assert cheap == {"pending": 2, "inflight": 1, "dead": 1, "done": None, "oldest_pending_age_seconds": 90.0}
    assert outbox_stats()["done"] == 1


@pytest.mark.django_db
def test_outbox_stats_command_prints_json_or_a_table(outbox_rows):
    out = StringIO()
    call_command("outbox_stats", "--json", stdout=out)
    table = StringIO()
    call_command("outbox_stats", stdout=table)

    assert json.loads(out.getvalue()) == {
        "pending": 2,
        "inflight": 1,
        "dead": 1,
        "done": 1,
        "oldest_pending_age_seconds": 90.0,
    }
    assert [line.split(":")[0].strip() for line in table.getvalue().splitlines()] == [
        "pending",
        "inflight",
        "dead",
        "done",
        "oldest_pending_age_seconds",
    ]


@pytest.mark.django_db
def test_metrics_expose_the_gauges_and_the_commit_to_publish_histogram(outbox_rows, client):
    register_collector()  # idempotent: AppConfig.ready() already did it
    text = client.get("/metrics").content.decode()

    assert "keel_outbox_pending 2.0" in text
    assert "keel_outbox_inflight 1.0" in text
    assert "keel_outbox_dead 1.0" in text
    assert "keel_outbox_oldest_pending_age_seconds 90.0" in text
    assert REGISTRY.get_sample_value("keel_outbox_commit_to_publish_seconds_count") >= 1
