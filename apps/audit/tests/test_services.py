"""Writers of the audit streams: in the caller's transaction, changed fields only, redacted, JSON-safe."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal

import pytest
import structlog
from django.db import transaction

from apps.audit.models import AuditEvent, InsurerExchangeEvent, JobRunEvent, PiiAccessEvent
from apps.audit.services import (
    MAX_BODY_BYTES,
    AuditEntry,
    AuditError,
    audit_record,
    audit_record_many,
    insurer_exchange_record,
    job_run,
    job_run_finish,
    job_run_start,
    pii_access_record,
    pii_access_record_many,
)
from apps.common.actors import Actor

pytestmark = pytest.mark.django_db


# --- audit_record -----------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_audit_record_many_outside_a_transaction_is_refused_and_writes_nothing(actor):
    with pytest.raises(AuditError, match="inside the transaction"):
        audit_record_many(actor=actor, entries=[AuditEntry("thing.updated", "thing", 1, after={"a": 1})])

    assert AuditEvent.objects.count() == 0


def test_audit_record_many_writes_one_row_per_entry_changed_fields_only_and_redacted(actor):
    entries = [
        AuditEntry("thing.moved", "thing", 1, employer_id=7, before={"s": "A", "k": 1}, after={"s": "B", "k": 1}),
        AuditEntry("thing.created", "thing", "x-2", after={"email": "a@b.example", "n": Decimal("1.50")}),
    ]

    with transaction.atomic():
        events = audit_record_many(actor=actor, entries=entries)

    rows = list(AuditEvent.objects.order_by("id").values("action", "object_id", "employer_id", "before", "after"))
    assert [e.pk for e in events] == list(AuditEvent.objects.order_by("id").values_list("pk", flat=True))
    assert rows == [
        {"action": "thing.moved", "object_id": "1", "employer_id": 7, "before": {"s": "A"}, "after": {"s": "B"}},
        {
            "action": "thing.created",
            "object_id": "x-2",
            "employer_id": None,
            "before": None,
            "after": {"email": "[redacted]", "n": "1.50"},
        },
    ]
    assert audit_record_many(actor=actor, entries=[]) == []


@pytest.mark.django_db(transaction=True)
def test_audit_record_outside_a_transaction_is_refused_and_writes_nothing(actor):
    with pytest.raises(AuditError, match="inside the transaction"):
        audit_record(actor=actor, action="thing.updated", object_type="thing", object_id=1, after={"a": 1})

    assert AuditEvent.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_audit_row_rolls_back_with_the_change_it_describes(actor):
    with pytest.raises(RuntimeError), transaction.atomic():
        audit_record(actor=actor, action="thing.updated", object_type="thing", object_id=1, after={"a": 1})
        raise RuntimeError("the change failed")

    assert AuditEvent.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_audit_row_commits_with_the_change(actor):
    with transaction.atomic():
        audit_record(actor=actor, action="thing.updated", object_type="thing", object_id=1, after={"a": 1})

    assert list(AuditEvent.objects.values_list("action", "after")) == [("thing.updated", {"a": 1})]


def test_only_changed_fields_are_stored_and_sensitive_ones_redacted(record):
    event = record(
        before={"name": "A", "status": "active", "email": "a@x.io", "pan": "ABCDE1234F", "tier": "gold"},
        after={"name": "B", "status": "active", "email": "b@x.io", "pan": "ABCDE1234F", "tier": "silver"},
        employer_id=3,
        sensitive_fields=["Tier"],
    )

    event.refresh_from_db()
    assert event.before == {"name": "A", "email": "[redacted]", "tier": "[redacted]"}
    assert event.after == {"name": "B", "email": "[redacted]", "tier": "[redacted]"}
    assert (
        event.actor,
        event.actor_kind,
        event.partner_id,
        event.request_id,
        event.ip,
        event.employer_id,
        event.object_type,
        event.object_id,
    ) == ("api_key:abcd1234", "api_key", 7, "req-1", "10.0.0.1", 3, "thing", "1")


def test_added_and_removed_keys_count_as_changes(record):
    event = record(before={"kept": 1, "dropped": 2}, after={"kept": 1, "added": 3})

    assert (event.before, event.after) == ({"dropped": 2}, {"added": 3})


def test_a_create_keeps_the_whole_after_and_a_delete_the_whole_before(record):
    created = record(action="thing.created", after={"name": "A", "password": "hunter2", "note": ""})
    deleted = record(action="thing.deleted", before={"name": "A", "phone_number": "+919999999999"})

    assert (created.before, created.after) == (None, {"name": "A", "password": "[redacted]", "note": ""})
    assert (deleted.before, deleted.after) == ({"name": "A", "phone_number": "[redacted]"}, None)


def test_values_are_stored_json_safe_and_compared_by_value(record):
    ref = uuid.UUID("12345678-1234-5678-1234-567812345678")
    event = record(
        before={"amount": Decimal("10.50"), "on": dt.date(2026, 1, 1), "same": Decimal("1.0")},
        after={
            "amount": Decimal("12.00"),
            "on": dt.date(2026, 2, 1),
            "at": dt.datetime(2026, 2, 1, 9, 30, tzinfo=dt.UTC),
            "ref": ref,
            "same": "1.0",
        },
    )

    event.refresh_from_db()
    assert event.before == {"amount": "10.50", "on": "2026-01-01"}
    assert event.after == {
        "amount": "12.00",
        "on": "2026-02-01",
        "at": "2026-02-01T09:30:00+00:00",
        "ref": "12345678-1234-5678-1234-567812345678",
    }


def test_sensitive_keys_are_redacted_at_any_depth(record):
    event = record(
        after={"member": {"first_name": "Asha", "code": "E1", "contacts": [{"email": "a@x.io", "kind": "work"}]}}
    )

    assert event.after == {
        "member": {"first_name": "[redacted]", "code": "E1", "contacts": [{"email": "[redacted]", "kind": "work"}]}
    }


def test_request_id_falls_back_to_the_current_correlation_id(record):
    structlog.contextvars.bind_contextvars(correlation_id="outbox:42")
    try:
        event = record(actor=Actor.system("outbox.relay"))
    finally:
        structlog.contextvars.unbind_contextvars("correlation_id")

    assert (event.actor, event.actor_kind, event.partner_id, event.request_id, event.ip) == (
        "system:outbox.relay",
        "system",
        None,
        "outbox:42",
        None,
    )


def test_a_malformed_ip_is_dropped_rather_than_failing_the_change(record):
    event = record(actor=Actor(kind="user", label="bob", ip="unknown, 10.0.0.1"), after={"n": 1})

    event.refresh_from_db()
    assert (event.actor, event.ip) == ("user:bob", None)


# --- pii_access_record --------------------------------------------------------------------------------------


def test_pii_access_records_who_what_and_why():
    operator = Actor.operator(user_id=5, username="alice", ip="10.1.1.1")

    event = pii_access_record(
        actor=operator, subject_type="loan_application", subject_id=99, field="pan", action="reveal", purpose="KYC"
    )

    assert list(
        PiiAccessEvent.objects.values_list("actor", "actor_kind", "subject_type", "subject_id", "field", "action")
    ) == [("user:alice", "user", "loan_application", "99", "pan", "reveal")]
    assert event.purpose == "KYC"


def test_pii_access_for_a_page_of_subjects_is_one_insert(actor, django_assert_num_queries):
    with django_assert_num_queries(1):
        events = pii_access_record_many(
            actor=actor, subject_type="loan_application", subject_ids=["a", "b"], field="pan", action="mask",
            purpose="partner API: list",
        )  # fmt: skip

    assert len(events) == 2
    assert list(PiiAccessEvent.objects.order_by("id").values_list("subject_id", "action", "request_id")) == [
        ("a", "mask", "req-1"),
        ("b", "mask", "req-1"),
    ]
    assert (
        pii_access_record_many(
            actor=actor, subject_type="loan_application", subject_ids=[], field="pan", action="mask", purpose="x"
        )
        == []
    )


@pytest.mark.parametrize(("action", "purpose"), [("peek", "KYC"), ("mask", "  ")])
def test_pii_access_without_a_known_action_or_a_purpose_is_refused(actor, action, purpose):
    with pytest.raises(AuditError):
        pii_access_record(
            actor=actor, subject_type="loan_application", subject_id=1, field="pan", action=action, purpose=purpose
        )

    assert PiiAccessEvent.objects.count() == 0


# --- insurer_exchange_record --------------------------------------------------------------------------------


def test_insurer_exchange_bodies_are_redacted_scrubbed_and_capped():
    event = insurer_exchange_record(
        insurer_code="sandbox-rest",
        operation="submit",
        endpoint="https://insurer.example/members",
        request_body={
            "member": {"first_name": "Asha", "email": "asha@example.com", "code": "E1", "pan": "ABCDE1234F"},
            "note": "x" * 40_000,
        },
        response_status=200,
        response_body='{"ok": true, "contact": "ops@insurer.example", "ref": "PAN ZZZZZ9999Z on file"}',
        duration_ms=120,
        endorsement_id=77,
        correlation_id="corr-1",
    )

    event.refresh_from_db()
    assert "Asha" not in event.request_body
    assert "asha@example.com" not in event.request_body
    assert "ABCDE1234F" not in event.request_body
    assert '"code": "E1"' in event.request_body
    assert len(event.request_body.encode()) <= MAX_BODY_BYTES
    assert event.request_body.endswith("bytes]")
    assert json.loads(event.response_body) == {"ok": True, "contact": "[email]", "ref": "PAN [pan] on file"}
    assert (event.response_status, event.duration_ms, event.endorsement_id, event.correlation_id) == (
        200,
        120,
        77,
        "corr-1",
    )


def test_insurer_exchange_non_json_bodies_are_scrubbed_as_text():
    event = insurer_exchange_record(
        insurer_code="legacy-soap",
        operation="enrol",
        direction="inbound",
        request_body=b"<member><pan>ABCDE1234F</pan><mail>x@y.io</mail></member>",
        error="timeout talking to x@y.io",
    )

    assert event.request_body == "<member><pan>[pan]</pan><mail>[email]</mail></member>"
    assert (event.response_body, event.error, event.direction) == ("", "timeout talking to [email]", "inbound")


@pytest.mark.django_db(transaction=True)
def test_insurer_exchange_may_be_recorded_outside_a_transaction_and_survives_a_rollback():
    with pytest.raises(RuntimeError):
        insurer_exchange_record(insurer_code="x", operation="submit", response_status=503)
        with transaction.atomic():
            raise RuntimeError("the caller's own work failed")

    assert InsurerExchangeEvent.objects.count() == 1


# --- job runs ------------------------------------------------------------------------------------------------


def _job_events() -> list[tuple]:
    return list(JobRunEvent.objects.order_by("id").values_list("job", "phase", "status", "params", "counts", "error"))


def test_job_run_writes_a_start_and_an_end_with_counts():
    with job_run("reconciliation", {"insurer": "x", "password": "p"}) as run:
        run.counts["matched"] = 5
        run.counts["mismatched"] = 1

    assert _job_events() == [
        ("reconciliation", "start", "running", {"insurer": "x", "password": "[redacted]"}, None, ""),
        ("reconciliation", "end", "succeeded", None, {"matched": 5, "mismatched": 1}, ""),
    ]
    assert JobRunEvent.objects.filter(run_id=run.run_id).count() == 2
    assert run.status == "succeeded"


def test_job_run_ends_failed_with_the_error_when_the_body_raises():
    with pytest.raises(ValueError, match="boom"), job_run("import") as run:
        run.counts["rows"] = 3
        raise ValueError("boom")

    assert _job_events() == [
        ("import", "start", "running", None, None, ""),
        ("import", "end", "failed", None, {"rows": 3}, "ValueError: boom"),
    ]


def test_job_run_ends_cancelled_when_interrupted():
    with pytest.raises(KeyboardInterrupt), job_run("import"):
        raise KeyboardInterrupt

    assert [e[2] for e in _job_events()] == ["running", "cancelled"]


def test_job_run_finish_by_hand_is_written_once():
    run = job_run_start(job="sweeper")
    first = job_run_finish(run, status="cancelled", counts={"left": 2}, error="shutdown")
    second = job_run_finish(run, status="succeeded")

    assert first is not None
    assert second is None
    assert _job_events() == [
        ("sweeper", "start", "running", None, None, ""),
        ("sweeper", "end", "cancelled", None, {"left": 2}, "shutdown"),
    ]


def test_job_run_finish_refuses_an_unknown_status():
    run = job_run_start(job="sweeper")

    with pytest.raises(AuditError):
        job_run_finish(run, status="done")

    assert JobRunEvent.objects.filter(phase="end").count() == 0
