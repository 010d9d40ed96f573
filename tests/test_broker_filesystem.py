"""config/broker.py `FilesystemChannel`: a message file is visible to readers only once it is complete.

Newcomer trial, 2026-12-02: `make run`'s worker died with `JSONDecodeError` in kombu's file-system transport —
a reader had taken a message file its writer had created but not yet written. These tests put a reader exactly
in that gap (inside the writer's lock call, after the file was opened) and show stock kombu handing it the
empty file, and Keel's channel handing it nothing until the message is whole.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from kombu import Connection
from kombu.transport import filesystem

from config.broker import FilesystemChannel

QUEUE = "celery"


def _channel(folder: Path, transport: str) -> Any:
    options = {"data_folder_in": str(folder), "data_folder_out": str(folder), "control_folder": str(folder)}
    return Connection(transport=transport, transport_options=options).channel()


def _read_inside_the_writers_lock(monkeypatch, channel: Any) -> list[Any]:
    """Make the writer's lock call read the queue (another process's `_get` at that instant); returns what
    each read got: a message, `Empty`, or the exception it raised."""
    seen: list[Any] = []
    real_lock = filesystem.lock

    def lock_then_read(f: Any, flags: int) -> None:
        real_lock(f, flags)
        try:
            seen.append(channel._get(QUEUE))
        except Empty:
            seen.append(Empty)
        except ValueError as exc:
            seen.append(exc)

    monkeypatch.setattr(filesystem, "lock", lock_then_read)
    return seen


def test_stock_kombu_hands_a_reader_the_half_written_file(tmp_path, monkeypatch):
    """The bug itself (if kombu fixes it, this test fails and the override can go)."""
    channel = _channel(tmp_path, "filesystem")
    seen = _read_inside_the_writers_lock(monkeypatch, channel)

    channel._put(QUEUE, {"body": "x"})

    assert len(seen) == 1
    assert isinstance(seen[0], json.JSONDecodeError)


def test_keels_channel_shows_a_message_only_once_it_is_whole_and_delivers_it_once(tmp_path, monkeypatch):
    channel = _channel(tmp_path, "config.broker:FilesystemTransport")
    assert isinstance(channel, FilesystemChannel)
    seen = _read_inside_the_writers_lock(monkeypatch, channel)

    channel._put(QUEUE, {"body": "x"})
    monkeypatch.setattr(filesystem, "lock", lambda f, flags: None)

    assert seen == [Empty]
    assert channel._get(QUEUE) == {"body": "x"}
    with pytest.raises(Empty):
        channel._get(QUEUE)
    assert list(tmp_path.iterdir()) == []


def test_a_torn_message_left_from_before_is_skipped_not_fatal_and_the_next_one_delivered(tmp_path, caplog):
    channel = _channel(tmp_path, "config.broker:FilesystemTransport")
    # kombu reads the folder in name order and names messages `<monotonic ms>_<uuid>`: "0_" sorts before every
    # such name (a "1_" did not on a machine whose uptime in ms began with 1, and the torn file was never read).
    (tmp_path / f"0_torn.{QUEUE}.msg").write_bytes(b"")
    (tmp_path / f"2_killed-mid-write.{QUEUE}.msg.tmp").write_bytes(b'{"bo')
    channel._put(QUEUE, {"body": "next"})

    with caplog.at_level(logging.WARNING, logger="config.broker"):
        assert channel._get(QUEUE) == {"body": "next"}
    assert [r.getMessage() for r in caplog.records] == ["broker.undecodable_message_skipped"]
    with pytest.raises(Empty):
        channel._get(QUEUE)


def test_the_embedded_broker_uses_keels_channel():
    """`make run`'s settings (no Redis: the file-system broker) select the channel above."""
    code = "from django.conf import settings; print(settings.CELERY_BROKER_TRANSPORT)"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.local"}
    for name in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.strip() == "config.broker:FilesystemTransport"
