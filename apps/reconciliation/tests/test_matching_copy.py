"""The match writes a policy's discrepancies by COPY on the run's first pass over it, and by INSERT … ON CONFLICT
DO NOTHING when a resumed run matches it again, so a key is never written twice (ADR 0051)."""

from __future__ import annotations

import pytest

from apps.common.bulk import COPY_MIN_ROWS, copy_create
from apps.reconciliation import matching
from apps.reconciliation.models import Discrepancy
from apps.reconciliation.selectors import run_policies

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]

MEMBERS = COPY_MIN_ROWS + 20  # one batch of at least COPY_MIN_ROWS rows: the COPY path


def test_first_pass_copies_the_batch_and_a_rematch_writes_no_key_twice(
    covered_policy, start_run, require_postgres, monkeypatch
) -> None:
    policy = covered_policy(MEMBERS, at_insurer=False)  # the run sees no insurer row: every member is missing
    run = start_run(policy)
    (scope,) = run_policies(run)
    copied: list[int] = []

    def spy(objs, **kwargs):
        copied.append(len(objs))
        return copy_create(objs, **kwargs)

    monkeypatch.setattr(matching, "copy_create", spy)

    counts = matching.policy_match(run=run, scope=scope)

    rows = list(Discrepancy.objects.filter(run=run).order_by("employee_code"))
    assert counts == {"missing_at_insurer": MEMBERS}
    assert copied == [MEMBERS]  # one batch (fewer than 1,000 rows), COPied
    assert [d.employee_code for d in rows] == [f"E{n:05d}" for n in range(MEMBERS)]
    first = rows[0]
    assert (first.kind, first.severity, first.status, first.key, first.insurer_value, first.resolution_result) == (
        "missing_at_insurer",
        "high",
        "open",
        "member:E00000",
        None,
        {},
    )
    assert first.keel_value["sum_insured"] == 500_000_00
    assert first.created_at is not None

    again = matching.policy_match(run=run, scope=scope)

    assert again == {"missing_at_insurer": MEMBERS}
    assert copied == [MEMBERS]  # not COPied again: the run already holds these keys
    assert Discrepancy.objects.filter(run=run).count() == MEMBERS
