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
