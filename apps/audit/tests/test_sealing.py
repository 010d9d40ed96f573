"""Hash-chain sealing and `audit_verify`: a clean chain verifies; edits, deletions, gaps and late rows do not."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, transaction

from apps.audit.models import AuditChainHead, AuditEvent, AuditSeal, JobRunEvent
from apps.audit.sealing import GENESIS, audit_verify, link_hash, seal_all
from apps.audit.services import audit_record, insurer_exchange_record, pii_access_record
from apps.audit.tasks import AuditChainBrokenError
from apps.audit.tasks import seal as seal_task
from apps.audit.tasks import verify as verify_task
from apps.common.actors import Actor

pytestmark = pytest.mark.django_db
ACTOR = Actor(kind="api_key", label="abcd1234", partner_id=7)


def _seals(stream: str = "audit") -> list[tuple[int, int]]:
    return list(AuditSeal.objects.filter(stream=stream).order_by("seq").values_list("seq", "event_id"))


def _problems(stream: str = "audit") -> list[tuple[str, int | None, int | None]]:
    return [(p.kind, p.event_id, p.seq) for p in audit_verify(stream).stream(stream).problems]


def test_sealing_builds_a_chain_that_verifies_and_the_command_exits_zero(record, capsys):
    events = [record(after={"n": i}) for i in range(5)]
    insurer_exchange_record(insurer_code="x", operation="submit", request_body={"a": 1})
    pii_access_record(actor=ACTOR, subject_type="loan", subject_id=1, field="pan", action="mask", purpose="api")

    assert seal_all() == {"audit": 5, "pii": 1, "insurer": 1, "job": 0}
    assert seal_all() == {"audit": 0, "pii": 0, "insurer": 0, "job": 0}

    seals = list(AuditSeal.objects.filter(stream="audit").order_by("seq"))
    assert [(s.seq, s.event_id) for s in seals] == [(i + 1, e.pk) for i, e in enumerate(events)]
    prev = GENESIS
    for seal, event in zip(seals, events, strict=True):
        assert seal.prev_hash == prev
        assert seal.hash == link_hash(stream="audit", seq=seal.seq, prev_hash=prev, event=event)
        prev = seal.hash
    head = AuditChainHead.objects.get(stream="audit")
    assert (head.seq, head.last_hash) == (5, prev)

    report = audit_verify()
    assert report.ok
    assert [(s.stream, s.sealed, s.problem_count) for s in report.streams] == [
        ("audit", 5, 0),
        ("pii", 1, 0),
        ("insurer", 1, 0),
        ("job", 0, 0),
    ]

    call_command("audit_verify")  # raises CommandError (exit status 1) on any problem
    out = capsys.readouterr().out
    assert f"audit: OK; 5 sealed, 0 awaiting a seal; head audit:5:{prev}" in out
    # The verification itself is a job run, recorded as succeeded.
    assert list(JobRunEvent.objects.order_by("id").values_list("job", "status")) == [
        ("audit.verify", "running"),
        ("audit.verify", "succeeded"),
    ]


def test_seal_batches_are_bounded_and_continue_the_same_chain(record):
    events = [record(after={"n": i}) for i in range(7)]

    assert seal_all(batch_size=3, max_batches=2) == {"audit": 6, "pii": 0, "insurer": 0, "job": 0}
    assert seal_all(batch_size=3) == {"audit": 1, "pii": 0, "insurer": 0, "job": 0}

    assert _seals() == [(i + 1, e.pk) for i, e in enumerate(events)]
    assert audit_verify().ok


def test_an_edited_row_makes_audit_verify_fail_naming_the_row(record, tamper):
    events = [record(after={"n": i}) for i in range(3)]
    seal_all()

    tamper("UPDATE audit_auditevent SET after = %s WHERE id = %s", ['{"n": 100}', events[1].pk])

    with pytest.raises(CommandError, match=r"audit verification failed: audit \(1\)"):
        call_command("audit_verify")
    assert _problems() == [("modified", events[1].pk, 2)]
    assert list(JobRunEvent.objects.filter(phase="end").values_list("status", flat=True)) == ["failed"]


def test_a_deleted_row_makes_audit_verify_fail_naming_the_row(record, tamper):
    events = [record(after={"n": i}) for i in range(3)]
    seal_all()

    tamper("DELETE FROM audit_auditevent WHERE id = %s", [events[0].pk])

    with pytest.raises(CommandError):
        call_command("audit_verify", "--stream", "audit")
    assert _problems() == [("removed", events[0].pk, 1)]


def test_a_deleted_seal_breaks_the_chain_and_leaves_its_event_unsealed(record, tamper, time_machine):
    time_machine.move_to("2026-11-23T10:00:00Z", tick=False)
    events = [record(after={"n": i}) for i in range(3)]
    seal_all()

    tamper("DELETE FROM audit_auditseal WHERE stream = 'audit' AND seq = 2")
    time_machine.shift(timedelta(minutes=11))

    assert _problems() == [
        ("chain_broken", None, 3),
        ("chain_broken", events[2].pk, 3),
        ("unsealed", events[1].pk, None),
    ]


def test_an_altered_seal_breaks_the_chain(record, tamper):
    events = [record(after={"n": i}) for i in range(3)]
    seal_all()

    tamper("UPDATE audit_auditseal SET hash = %s WHERE stream = 'audit' AND seq = 2", ["f" * 64])

    assert _problems() == [("modified", events[1].pk, 2), ("chain_broken", events[2].pk, 3)]


def test_an_old_unsealed_row_makes_audit_verify_fail_but_a_recent_one_does_not(record, time_machine):
    time_machine.move_to("2026-11-23T10:00:00Z", tick=False)
    record(after={"n": 1})
    seal_all()
    time_machine.shift(timedelta(minutes=1))
    late = record(after={"n": 2})

    time_machine.shift(timedelta(minutes=5))
    assert audit_verify().ok
    assert audit_verify().stream("audit").unsealed_recent == 1

    time_machine.shift(timedelta(minutes=6))  # 11 minutes old: past the 10-minute grace
    assert _problems() == [("unsealed", late.pk, None)]
    assert audit_verify(grace=timedelta(minutes=30)).ok
    with pytest.raises(CommandError):
        call_command("audit_verify")
    call_command("audit_verify", "--grace-seconds", "3600")


def test_removing_the_newest_rows_with_their_seals_is_caught_by_the_head(record, tamper):
    events = [record(after={"n": i}) for i in range(3)]
    seal_all()
    last = AuditSeal.objects.get(stream="audit", seq=3)
    second = AuditSeal.objects.get(stream="audit", seq=2)

    tamper("DELETE FROM audit_auditevent WHERE id = %s", [events[2].pk])
    tamper("DELETE FROM audit_auditseal WHERE id = %s", [last.pk])

    assert _problems() == [("head_mismatch", None, 3)]

    # Known limitation: rewinding the head too hides it, except from a head kept outside the database.
    AuditChainHead.objects.filter(stream="audit").update(seq=2, last_hash=second.hash)
    assert audit_verify().ok
    report = audit_verify("audit", expected_heads={"audit": (3, last.hash)})
    assert [(p.kind, p.seq) for p in report.stream("audit").problems] == [("head_mismatch", None)]
    with pytest.raises(CommandError):
        call_command("audit_verify", "--expect-head", f"audit:3:{last.hash}")
    call_command("audit_verify", "--expect-head", f"audit:2:{second.hash}")


def test_the_floor_skips_settled_events_and_a_row_slipped_in_below_it_is_reported(record, tamper, time_machine):
    time_machine.move_to("2026-11-23T10:00:00Z", tick=False)
    first = record(after={"n": 1})
    gap = record(after={"n": 2})
    third = record(after={"n": 3})
    tamper("DELETE FROM audit_auditevent WHERE id = %s", [gap.pk])  # an id whose transaction is still open
    seal_all()
    assert AuditChainHead.objects.get(stream="audit").floor_event_id == 0  # nothing settled yet

    time_machine.shift(timedelta(hours=2))
    fresh = record(after={"n": 4})
    seal_all()
    assert AuditChainHead.objects.get(stream="audit").floor_event_id == third.pk

    # The "open transaction" commits two hours late, below the floor: the periodic sealer does not see it...
    with transaction.atomic():
        AuditEvent.objects.create(
            id=gap.pk,
            actor=gap.actor,
            actor_kind=gap.actor_kind,
            action=gap.action,
            object_type="thing",
            object_id="1",
            after={"n": 2},
            created_at=gap.created_at,
        )
    assert seal_all()["audit"] == 0
    # ...audit_verify reports it, and an operator seals it deliberately after looking.
    assert _problems() == [("unsealed", gap.pk, None)]
    call_command("audit_seal", "--full-scan", "--stream", "audit")
    assert _seals() == [(1, first.pk), (2, third.pk), (3, fresh.pk), (4, gap.pk)]
    assert audit_verify().ok


def test_seal_task_seals_and_verify_task_raises_on_a_broken_chain(record, tamper):
    event = record(after={"n": 1})

    assert seal_task() == {"audit": 1, "pii": 0, "insurer": 0, "job": 0}
    assert verify_task() is True

    tamper("UPDATE audit_auditevent SET action = 'forged' WHERE id = %s", [event.pk])
    with pytest.raises(AuditChainBrokenError, match=f"event {event.pk}"):
        verify_task()
    assert list(JobRunEvent.objects.filter(phase="end").order_by("id").values_list("status", flat=True)) == [
        "succeeded",
        "failed",
    ]


def test_audit_verify_rejects_an_unknown_stream_and_a_malformed_head():
    with pytest.raises(ValueError, match="unknown audit stream"):
        audit_verify("nope")
    with pytest.raises(CommandError, match="STREAM:SEQ:HASH"):
        call_command("audit_verify", "--expect-head", "audit:1:short")


# --- Concurrency (PostgreSQL) -----------------------------------------------------------------------------


def _in_thread(target, *args) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            target(*args)
        except BaseException as exc:  # surfaced by the test
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, errors


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_writers_do_not_wait_for_a_sealer_holding_the_chain_lock(require_postgres):
    AuditChainHead.objects.get_or_create(stream="audit")
    locked, release = threading.Event(), threading.Event()

    def sealer_holding_the_lock() -> None:
        with transaction.atomic():
            AuditChainHead.objects.select_for_update().get(stream="audit")
            locked.set()
            release.wait(10)

    thread, errors = _in_thread(sealer_holding_the_lock)
    assert locked.wait(10)
    try:
        with transaction.atomic():
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL lock_timeout = '1s'")  # a writer that queued would fail here
            event = audit_record(actor=ACTOR, action="w", object_type="thing", object_id=1)
    finally:
        release.set()
        thread.join()

    assert errors == []
    assert AuditEvent.objects.filter(pk=event.pk).exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_event_committing_out_of_id_order_is_sealed_later_in_the_chain(require_postgres):
    inserted, release = threading.Event(), threading.Event()
    slow_ids: list[int] = []

    def slow_writer() -> None:
        with transaction.atomic():
            slow_ids.append(audit_record(actor=ACTOR, action="slow", object_type="thing", object_id=1).pk)
            inserted.set()
            release.wait(10)

    thread, errors = _in_thread(slow_writer)
    assert inserted.wait(10)
    with transaction.atomic():
        fast = audit_record(actor=ACTOR, action="fast", object_type="thing", object_id=2)
    assert seal_all()["audit"] == 1  # the slow row is not committed yet
    release.set()
    thread.join()
    assert seal_all()["audit"] == 1

    assert errors == []
    assert slow_ids[0] < fast.pk
    assert _seals() == [(1, fast.pk), (2, slow_ids[0])]
    assert audit_verify().ok


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_concurrent_writers_and_sealers_leave_every_event_sealed_exactly_once(require_postgres):
    writers, per_writer = 6, 50
    stop = threading.Event()

    def writer(n: int) -> None:
        for i in range(per_writer):
            with transaction.atomic():
                audit_record(actor=ACTOR, action="w", object_type="thing", object_id=f"{n}-{i}")
                if i % 7 == 0:  # some writers commit late, out of id order
                    audit_record(actor=ACTOR, action="w2", object_type="thing", object_id=f"{n}-{i}-b")

    def sealer() -> None:
        while not stop.is_set():
            seal_all(batch_size=17)

    sealers = [_in_thread(sealer) for _ in range(2)]
    writer_threads = [_in_thread(writer, n) for n in range(writers)]
    for thread, _ in writer_threads:
        thread.join()
    stop.set()
    for thread, _ in sealers:
        thread.join()
    seal_all()

    assert [e for _, errs in writer_threads + sealers for e in errs] == []
    event_ids = sorted(AuditEvent.objects.values_list("id", flat=True))
    expected = writers * (per_writer + len(range(0, per_writer, 7)))
    assert len(event_ids) == expected
    seals = _seals()
    assert [seq for seq, _ in seals] == list(range(1, expected + 1))
    assert sorted(event_id for _, event_id in seals) == event_ids
    assert audit_verify().ok
