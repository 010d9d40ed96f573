"""`WarnAtMostEvery`: a dependency that fails on every request while it is down logs one warning per interval
(with the count left out), and the outbox nudge uses it — a Redis outage is not a traceback per commit."""

from __future__ import annotations

import logging

import pytest

from apps.common.logging import WarnAtMostEvery


def test_the_first_failure_is_logged_then_one_per_interval_with_the_count_left_out(caplog, monkeypatch):
    clock = [100.0]
    monkeypatch.setattr("apps.common.logging.time.monotonic", lambda: clock[0])
    warn = WarnAtMostEvery(logging.getLogger("keel.test"), "dep.down", seconds=60.0)

    with caplog.at_level(logging.WARNING, logger="keel.test"):
        logged = [warn(error="x")]
        for _ in range(5):
            clock[0] += 10
            logged.append(warn(error="x"))
        clock[0] += 10  # 60 s after the first
        logged.append(warn(error="y"))

    assert logged == [True, False, False, False, False, False, True]
    assert [(r.getMessage(), r.suppressed, r.error) for r in caplog.records] == [
        ("dep.down", 0, "x"),
        ("dep.down", 5, "y"),
    ]


@pytest.mark.django_db
def test_a_nudge_that_fails_on_every_commit_logs_one_traceback(caplog, monkeypatch):
    from apps.outbox import services

    class Down:
        def add(self, *args, **kwargs):
            raise ConnectionError("redis is down")

    monkeypatch.setattr(services, "cache", Down())
    monkeypatch.setattr(services, "_warn_nudge_failed", WarnAtMostEvery(services.log, "outbox.nudge_failed"))

    with caplog.at_level(logging.WARNING, logger=services.log.name):
        for _ in range(20):
            services._nudge()

    assert [r.getMessage() for r in caplog.records] == ["outbox.nudge_failed"]
    assert caplog.records[0].exc_info is not None
