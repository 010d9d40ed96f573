"""Shared pytest fixtures (registered as a plugin by apps/conftest.py and tests/conftest.py)."""

from __future__ import annotations

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
