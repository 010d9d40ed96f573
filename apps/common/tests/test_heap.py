"""Every long-running process freezes its start-up heap before it serves (apps/common/heap.py, ADR 0013): the ASGI
and WSGI entries at import, Celery workers at `worker_init`, the relay and the webhook dispatcher before their
loops. A full collection then walks only what the work allocated (90–130 ms stalls in `webhook_dispatch`)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys

import pytest
from django.core.management import call_command


@pytest.mark.parametrize("module", ["config.asgi", "config.wsgi"])
def test_the_web_entries_freeze_the_loaded_heap(module):
    script = f"import gc, {module}; print(gc.get_freeze_count())"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)

    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) > 10_000  # Django and the apps: tens of thousands of objects


@pytest.mark.parametrize(
    ("command", "loop", "options"),
    [
        ("webhook_dispatch", "apps.partners.management.commands.webhook_dispatch.dispatch_forever", {}),
        ("outbox_relay", "apps.outbox.management.commands.outbox_relay.relay_forever", {}),
    ],
)
def test_the_long_running_commands_freeze_before_their_loop(monkeypatch, command, loop, options):
    seen: list[int] = []
    frozen: list[bool] = []
    monkeypatch.setattr("apps.common.heap.gc.freeze", lambda: frozen.append(True))
    monkeypatch.setattr(loop, lambda **kwargs: seen.append(len(frozen)) or 0)

    call_command(command, **options)

    assert seen == [1]  # frozen once, before the loop started


def test_the_worker_freezes_at_worker_init(monkeypatch):
    from config import celery

    frozen: list[bool] = []
    monkeypatch.setattr("apps.common.heap.gc.freeze", lambda: frozen.append(True))
    monkeypatch.setattr("apps.common.heap.gc.collect", lambda: 0)

    celery._freeze_the_loaded_heap()

    assert frozen == [True]
    assert gc.isenabled()
