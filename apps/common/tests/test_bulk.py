"""`apps.common.bulk.bulk_update`: each row gets its own values, of every column type we write in bulk."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.common import bulk
from apps.outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db


def _message(n: int) -> OutboxMessage:
    return OutboxMessage.objects.create(topic=f"t.{n}", key=f"k{n}", payload={"n": n})


def test_bulk_update_writes_each_rows_own_values_and_leaves_other_rows_and_columns_alone():
    rows = [_message(n) for n in range(3)]
    untouched = _message(99)
    later = timezone.now() + timedelta(minutes=5)
    rows[0].payload, rows[0].key, rows[0].leased_until = {"n": "zero", "nested": [1, {"a": None}]}, None, later
    rows[1].payload, rows[1].key, rows[1].attempts = {"n": 1.5}, "k-one", 4
    rows[2].payload, rows[2].key = [], "k'two\"; --"

    updated = bulk.bulk_update(rows, ["payload", "key", "leased_until"], batch_size=2)

    assert updated == 3
    got = {m.pk: (m.topic, m.key, m.payload, m.leased_until, m.attempts) for m in OutboxMessage.objects.all()}
    assert got == {
        rows[0].pk: ("t.0", None, {"n": "zero", "nested": [1, {"a": None}]}, later, 0),
        rows[1].pk: ("t.1", "k-one", {"n": 1.5}, None, 0),  # `attempts` was not among the fields
        rows[2].pk: ("t.2", "k'two\"; --", [], None, 0),
        untouched.pk: ("t.99", "k99", {"n": 99}, None, 0),
    }


def test_bulk_update_of_nothing_does_nothing(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert bulk.bulk_update([], ["key"]) == 0


def _audit_rows(n: int, now) -> list:
    from apps.audit.models import AuditEvent

    return [
        AuditEvent(
            actor="system:tests",
            actor_kind="system",
            action="t.copied",
            object_type="thing",
            object_id=str(i),
            employer_id=i if i % 2 else None,
            before={"status": "A", "odd": 'tab\there \\ "quoted" ✓'} if i % 3 else None,
            after={"status": "B", "n": i, "nested": [None, {"x": 1.5}]},
            request_id="",
            ip="10.0.0.1" if i % 2 else None,
            created_at=now,
        )
        for i in range(n)
    ]


@pytest.mark.parametrize("count", [3, bulk.COPY_MIN_ROWS + 20])
def test_copy_create_inserts_every_column_as_bulk_create_would_and_sets_the_ids(count: int) -> None:
    from apps.audit.models import AuditEvent
    from apps.endorsements.models import EndorsementHistory

    now = timezone.now()
    rows = _audit_rows(count, now)

    created = bulk.copy_create(rows)

    assert created == rows
    assert all(r.pk is not None and r._state.adding is False for r in rows)
    stored = {
        e.pk: (e.object_id, e.employer_id, e.before, e.after, e.ip, e.created_at)
        for e in AuditEvent.objects.filter(action="t.copied")
    }
    assert stored == {r.pk: (r.object_id, r.employer_id, r.before, r.after, r.ip, now) for r in rows}
    assert EndorsementHistory.objects.count() == 0


def test_copy_create_stamps_auto_now_add_columns() -> None:
    from apps.common.actors import Actor
    from apps.endorsements import services
    from apps.endorsements.models import EndorsementHistory
    from apps.endorsements.parsing import draft_from_request
    from apps.endorsements.tests.factories import PolicyFactory, addition

    policy = PolicyFactory()
    endorsement = services.endorsement_submit(
        employer=policy.employer,
        policy=policy,
        draft=draft_from_request(addition(policy, "E-1", effective=timezone.localdate())),
        partner_id=policy.employer.partner_id,
        actor=Actor.system("tests"),
    )
    before = timezone.now()
    rows = [
        EndorsementHistory(endorsement_id=endorsement.pk, from_status="SENT", to_status="CONFIRMED", actor=f"a{i}")
        for i in range(bulk.COPY_MIN_ROWS)
    ]

    bulk.copy_create(rows)

    stored = list(EndorsementHistory.objects.filter(to_status="CONFIRMED").order_by("id"))
    assert [h.pk for h in stored] == [r.pk for r in rows]
    assert all(h.at >= before for h in stored)  # stamped on insert, as `bulk_create` would


def test_copy_create_of_nothing_does_nothing(django_assert_num_queries) -> None:
    with django_assert_num_queries(0):
        assert bulk.copy_create([]) == []


def _columns(model, pk) -> dict:
    row = model.objects.filter(pk=pk).values().get()
    return {name: value for name, value in row.items() if name != "id"}


def test_insert_one_stores_exactly_what_save_stores(time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    fields = {"topic": "t.x", "key": "k'1\"; --", "payload": {"n": [1, {"a": None}], "s": "₹"}, "headers": {"c": "x"}}
    by_orm = OutboxMessage(**fields)
    by_orm.save(force_insert=True)

    fast = bulk.insert_one(OutboxMessage(**fields))

    assert fast.pk is not None
    assert fast.pk != by_orm.pk
    assert (fast._state.adding, fast._state.db) == (False, "default")
    assert _columns(OutboxMessage, fast.pk) == _columns(OutboxMessage, by_orm.pk)
    assert OutboxMessage.objects.get(pk=fast.pk).payload == fields["payload"]


def test_insert_one_keeps_a_given_primary_key_and_raises_like_save_on_a_duplicate():
    from django.db import IntegrityError, transaction

    given = bulk.insert_one(OutboxMessage(pk=987_654_321, topic="t.given", payload={}))
    assert OutboxMessage.objects.get(pk=987_654_321).topic == "t.given"

    with pytest.raises(IntegrityError), transaction.atomic():
        bulk.insert_one(OutboxMessage(pk=given.pk, topic="t.again", payload={}))

    assert list(OutboxMessage.objects.values_list("topic", flat=True)) == ["t.given"]


def test_insert_one_of_a_row_with_foreign_keys_nulls_ints_and_json_stores_what_save_stores(time_machine):
    """The prepared-value shortcut (`_preparer`) against the ORM's own `save` on a wide row: strings, an int
    foreign-key-like id, None, an IP, JSON and an auto timestamp."""
    from apps.audit.models import AuditEvent

    time_machine.move_to(timezone.now(), tick=False)
    for i in (1, 2):  # odd and even rows: the None and non-None branches of `_audit_rows`
        by_orm, fast = _audit_rows(i + 1, timezone.now())[i], _audit_rows(i + 1, timezone.now())[i]
        by_orm.save(force_insert=True)

        bulk.insert_one(fast)

        assert _columns(AuditEvent, fast.pk) == _columns(AuditEvent, by_orm.pk)


def test_copy_create_of_one_row_takes_the_cached_insert_and_stores_what_bulk_create_stores(
    django_assert_num_queries,
):
    from apps.audit.models import AuditEvent

    now = timezone.now()
    by_orm, one = _audit_rows(2, now)[1], _audit_rows(2, now)[1]
    AuditEvent.objects.bulk_create([by_orm])

    with django_assert_num_queries(1):
        assert bulk.copy_create([one]) == [one]

    assert one.pk is not None
    assert one._state.adding is False
    assert _columns(AuditEvent, one.pk) == _columns(AuditEvent, by_orm.pk)


def test_insert_one_of_a_model_with_save_receivers_sends_them():
    """The cached INSERT sends no signals: for a model something listens on (the principal cache's invalidation
    on `Partner`, ADR 0054) `insert_one` saves through the ORM, so the receiver still runs."""
    from apps.partners.models import Partner
    from apps.partners.principal_cache import principal_cache

    principal_cache.put(("api_key", "stale"), object())

    partner = bulk.insert_one(Partner(name="signalled partner"))

    assert Partner.objects.get(pk=partner.pk).name == "signalled partner"
    assert len(principal_cache) == 0
