from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, transaction

from apps.audit.models import AuditEvent
from apps.audit.services import audit_record
from apps.common.actors import Actor

ACTOR = Actor(kind="api_key", label="abcd1234", partner_id=7, ip="10.0.0.1", request_id="req-1")


@pytest.fixture
def actor() -> Actor:
    return ACTOR


@pytest.fixture
def record() -> Callable[..., AuditEvent]:
    """Write one audit event in its own transaction, as a service would."""

    def _record(**kwargs: Any) -> AuditEvent:
        kwargs.setdefault("actor", ACTOR)
        kwargs.setdefault("action", "thing.updated")
        kwargs.setdefault("object_type", "thing")
        kwargs.setdefault("object_id", 1)
        with transaction.atomic():
            return audit_record(**kwargs)

    return _record


@pytest.fixture
def tamper() -> Callable[..., None]:
    """Run SQL behind the append-only triggers' back, as an attacker with superuser rights could."""

    def _tamper(sql: str, params: list[Any] | None = None) -> None:
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                cursor.execute("SET session_replication_role = replica")  # no user triggers fire
            try:
                cursor.execute(sql, params or [])
            finally:
                if connection.vendor == "postgresql":
                    cursor.execute("SET session_replication_role = DEFAULT")

    return _tamper
