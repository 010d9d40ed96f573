"""Shared pytest fixtures (registered as a plugin by apps/conftest.py and tests/conftest.py)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from django.core.cache import cache
from django.db import connection


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    """Rate-limit counters and circuit state live in the cache; no test sees another's."""
    cache.clear()


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


@pytest.fixture
def require_postgres() -> None:
    if not is_postgres():
        pytest.skip("needs PostgreSQL")


def row_counts() -> dict[str, int]:
    """Rows in every table of every Keel app, in one query: compare before/after to prove nothing was written
    (no domain row, no outbox event, no audit event, no ledger entry, no idempotency record)."""
    from django.apps import apps

    models = sorted(
        (m for m in apps.get_models() if m.__module__.startswith("apps.") and not m._meta.proxy),
        key=lambda m: m._meta.db_table,
    )
    qn = connection.ops.quote_name
    # Table names come from the models, quoted: no outside input reaches this SQL.
    sql = "SELECT " + ", ".join(f"(SELECT COUNT(*) FROM {qn(m._meta.db_table)})" for m in models)  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql)
        counts = cursor.fetchone()
    return {m._meta.label: int(n) for m, n in zip(models, counts, strict=True)}


@contextlib.contextmanager
def uvicorn_in_thread(app: Any, **options: Any) -> Iterator[int]:
    """Serve the ASGI `app` with uvicorn on a free 127.0.0.1 port, in a thread of this process (so it sees the
    test database), until the block ends; yields the port. `options` go to `uvicorn.Config`."""
    import socket
    import threading
    import time

    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", **options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="asgi-test-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)
