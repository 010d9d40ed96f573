"""Audit streams: written in the caller's transaction, changed fields only, redacted, append-only, sealed."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, transaction

from apps.audit.models import AuditEvent, AuditSeal, InsurerExchangeEvent, JobRunEvent, PiiAccessEvent
from apps.audit.sealing import audit_verify, seal_all
from apps.audit.services import (
    AuditError,
    audit_record,
    insurer_exchange_record,
    job_run,
    pii_access_record,
)
from apps.common.actors import Actor

ACTOR = Actor(kind="api_key", label="abcd1234", partner_id=7, ip="10.0.0.1", request_id="req-1")


def record(**kwargs) -> AuditEvent:
    with transaction.atomic():
        return audit_record(actor=ACTOR, action="thing.updated", object_type="thing", object_id=1, **kwargs)


@pytest.mark.django_db(transaction=True)
def test_audit_record_outside_a_transaction_is_refused():
    with pytest.raises(AuditError, match="inside the transaction"):
        audit_record(actor=ACTOR, action="x", object_type="thing", object_id=1)
    assert AuditEvent.objects.count() == 0


@pytest.mark.django_db
def test_only_changed_fields_are_stored_and_sensitive_ones_redacted():
    event = record(before={"name": "A", "status": "active", "email": "a@x.io"},
                   after={"name": "B", "status": "active", "email": "b@x.io"}, employer_id=3)

    assert event.before == {"name": "A", "email": "[redacted]"}
    assert event.after == {"name": "B", "email": "[redacted]"}
    assert (event.actor, event.actor_kind, event.partner_id, event.request_id, event.employer_id) == (
        "api_key:abcd1234", "api_key", 7, "req-1", 3)


@pytest.mark.django_db(transaction=True)
def test_audit_row_rolls_back_with_its_transaction():
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(actor=ACTOR, action="x", object_type="thing", object_id=1)
        raise RuntimeError("the change failed")

    assert AuditEvent.objects.count() == 0


@pytest.mark.django_db
def test_pii_access_and_job_runs_are_recorded():
    pii_access_record(actor=ACTOR, subject_type="loan_application", subject_id="abc", field="pan",
                      action="mask", purpose="api response")

    with job_run("nightly", {"scope": "all"}) as run:
        run.counts["rows"] = 5
    with pytest.raises(ValueError), job_run("broken"):
        raise ValueError("boom")

    assert PiiAccessEvent.objects.get().action == "mask"
    events = list(JobRunEvent.objects.order_by("id").values_list("job", "phase", "status", "counts", "error"))
    assert events == [
        ("nightly", "start", "running", None, ""),
        ("nightly", "end", "succeeded", {"rows": 5}, ""),
        ("broken", "start", "running", None, ""),
        ("broken", "end", "failed", {}, "ValueError: boom"),
    ]


@pytest.mark.django_db
def test_insurer_exchange_bodies_are_redacted_and_capped():
    event = insurer_exchange_record(
        insurer_code="sandbox-rest", operation="submit",
        request_body={"member": {"first_name": "Asha", "email": "asha@example.com", "code": "E1"},
                      "note": "x" * 40_000},
        response_status=200, response_body='{"ok": true, "contact": "ops@insurer.example"}',
    )

    assert "Asha" not in event.request_body
    assert "asha@example.com" not in event.request_body
    assert "E1" in event.request_body
    assert len(event.request_body) <= 16_000
    assert "ops@insurer.example" not in event.response_body


@pytest.mark.django_db
def test_sealed_chain_verifies_and_the_command_exits_zero():
    for i in range(5):
        record(after={"n": i})
    insurer_exchange_record(insurer_code="x", operation="submit")

    assert seal_all()["audit"] == 5
    assert seal_all() == {"audit": 0, "pii": 0, "insurer": 0, "job": 0}
    assert audit_verify().ok
    call_command("audit_verify")  # raises CommandError on any problem


def _tamper(sql: str, params: list) -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent DISABLE TRIGGER USER")
        cursor.execute(sql, params)
        if connection.vendor == "postgresql":
            cursor.execute("ALTER TABLE audit_auditevent ENABLE TRIGGER USER")


@pytest.mark.django_db
def test_an_edited_row_makes_audit_verify_fail():
    events = [record(after={"n": i}) for i in range(3)]
    seal_all()

    _tamper("UPDATE audit_auditevent SET action = %s WHERE id = %s", ["thing.forged", events[1].pk])

    with pytest.raises(CommandError):
        call_command("audit_verify")
    assert f"event {events[1].pk} (seal #2) has been modified" in audit_verify().streams[0].problems


@pytest.mark.django_db
def test_a_deleted_row_makes_audit_verify_fail():
    events = [record(after={"n": i}) for i in range(3)]
    seal_all()

    _tamper("DELETE FROM audit_auditevent WHERE id = %s", [events[0].pk])

    with pytest.raises(CommandError):
        call_command("audit_verify")
    assert f"event {events[0].pk} (seal #1) has been removed" in audit_verify().streams[0].problems


@pytest.mark.django_db
def test_an_old_unsealed_row_makes_audit_verify_fail(time_machine):
    time_machine.move_to("2026-11-23T10:00:00Z", tick=False)
    record(after={"n": 1})
    seal_all()
    time_machine.shift(timedelta(minutes=1))
    late = record(after={"n": 2})

    time_machine.shift(timedelta(minutes=20))

    problems = audit_verify().streams[0].problems
    assert len(problems) == 1
    assert str(late.pk) in problems[0]


@pytest.mark.postgres
@pytest.mark.django_db
@pytest.mark.parametrize("statement", ["UPDATE audit_auditevent SET action = 'x'", "DELETE FROM audit_auditevent",
                                       "UPDATE audit_auditseal SET hash = 'x'", "DELETE FROM audit_auditseal"])
def test_update_and_delete_fail_on_postgres(require_postgres, statement):
    record(after={"n": 1})
    seal_all()

    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)

    assert AuditEvent.objects.count() == 1
    assert AuditSeal.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_and_sealer_leave_every_event_sealed_exactly_once(require_postgres):
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            for i in range(60):
                with transaction.atomic():
                    audit_record(actor=ACTOR, action="w", object_type="thing", object_id=f"{n}-{i}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            connection.close()

    def sealer() -> None:
        try:
            while not stop.is_set():
                seal_all()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    seal_thread = threading.Thread(target=sealer)
    seal_thread.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    seal_thread.join()
    seal_all()

    assert errors == []
    assert AuditEvent.objects.count() == 240
    assert AuditSeal.objects.filter(stream="audit").count() == 240
    assert sorted(AuditSeal.objects.filter(stream="audit").values_list("seq", flat=True)) == list(range(1, 241))
    assert audit_verify().ok
