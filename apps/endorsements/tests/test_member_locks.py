"""Member locks in two levels (issue 15 part 4): a batch above `MEMBER_LOCKS_MAX` members takes its policy's lock
alone (a 50,000-row upload took 50,000 advisory locks and PostgreSQL ran out of lock-table memory); everyone else
shares the policy lock and locks their members."""

from __future__ import annotations

import threading

import pytest
from django.db import OperationalError, connection, transaction

from apps.endorsements.services.transitions import MEMBER_LOCKS_MAX, _lock_members

pytestmark = [pytest.mark.postgres]


def my_advisory_locks() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT mode FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() ORDER BY mode")
        return [mode for (mode,) in cursor.fetchall()]


@pytest.mark.django_db
def test_a_few_members_share_the_policy_lock_and_lock_each_member(require_postgres):
    with transaction.atomic():
        _lock_members(7, ["E-1", "E-2", "E-3", "E-2"])

        assert my_advisory_locks() == ["ExclusiveLock"] * 3 + ["ShareLock"]


@pytest.mark.django_db
def test_one_member_shares_the_policy_lock_and_locks_itself(require_postgres):
    with transaction.atomic():
        _lock_members(7, ["E-1"])

        assert my_advisory_locks() == ["ExclusiveLock", "ShareLock"]


@pytest.mark.django_db
def test_a_batch_above_the_bound_takes_only_the_policy_lock(require_postgres):
    with transaction.atomic():
        _lock_members(7, [f"E-{i}" for i in range(50_000)])

        assert my_advisory_locks() == ["ExclusiveLock"]


@pytest.mark.django_db(transaction=True)
def test_a_large_batch_excludes_member_work_on_its_policy_but_not_on_another(require_postgres):
    holding, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def large_batch() -> None:
        try:
            with transaction.atomic():
                _lock_members(7, [f"E-{i}" for i in range(MEMBER_LOCKS_MAX + 1)])
                holding.set()
                release.wait(10)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    def single(policy_id: int) -> str:
        outcome: list[str] = []

        def run() -> None:
            try:
                with transaction.atomic():
                    with connection.cursor() as cursor:
                        cursor.execute("SET LOCAL lock_timeout = '300ms'")
                    _lock_members(policy_id, ["E-1"])
                outcome.append("locked")
            except OperationalError:
                outcome.append("waited past lock_timeout")
            finally:
                connection.close()

        thread = threading.Thread(target=run)
        thread.start()
        thread.join(10)
        return outcome[0]

    batch = threading.Thread(target=large_batch)
    batch.start()
    assert holding.wait(10)
    try:
        assert single(7) == "waited past lock_timeout"
        assert single(8) == "locked"
    finally:
        release.set()
        batch.join(10)
    assert errors == []
    assert single(7) == "locked"
