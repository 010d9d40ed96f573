"""On PostgreSQL the audit tables and their seals refuse UPDATE and DELETE, whoever issues them."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction

from apps.audit.models import AuditEvent, AuditSeal, InsurerExchangeEvent, JobRunEvent, PiiAccessEvent
from apps.audit.sealing import seal_all
from apps.audit.services import insurer_exchange_record, job_run, pii_access_record
from apps.common.actors import Actor

TABLES = [
    "audit_auditevent",
    "audit_piiaccessevent",
    "audit_insurerexchangeevent",
    "audit_jobrunevent",
    "audit_auditseal",
]


@pytest.fixture
def one_row_everywhere(record) -> None:
    record(after={"n": 1})
    pii_access_record(
        actor=Actor.system("test"), subject_type="loan", subject_id=1, field="pan", action="mask", purpose="api"
    )
    insurer_exchange_record(insurer_code="x", operation="submit")
    with job_run("nightly"):
        pass
    seal_all()


def _counts() -> list[int]:
    return [m.objects.count() for m in (AuditEvent, PiiAccessEvent, InsurerExchangeEvent, JobRunEvent, AuditSeal)]


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("statement", ["UPDATE {} SET id = id", "DELETE FROM {}"])
def test_update_and_delete_fail_on_postgres(require_postgres, one_row_everywhere, table, statement):
    assert _counts() == [1, 1, 1, 2, 5]

    with pytest.raises(DatabaseError, match="audit tables are append-only"):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement.format(table))

    assert _counts() == [1, 1, 1, 2, 5]


@pytest.mark.postgres
@pytest.mark.django_db
def test_the_orm_cannot_update_or_delete_either(require_postgres, record):
    event = record(after={"n": 1})

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditEvent.objects.filter(pk=event.pk).update(action="forged")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        event.delete()

    event.refresh_from_db()
    assert event.action == "thing.updated"
