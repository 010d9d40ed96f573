"""A run judges both sides as they were when the insurer's data was read (ADR 0063): Keel rows written after that
(a cover started or ended, a detail or sum insured changed, money captured or refunded) are left out of the
run's discrepancies and counted as `changed_during_run`; the next run judges them. The steps are driven (the
runner's `on_page` hook, a killed worker), never slept."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
import time_machine
from django.utils import timezone

from apps.employers.models import Coverage, Employee, Policy
from apps.employers.services import coverage_end, coverage_update
from apps.endorsements.models import Endorsement
from apps.insurers.sandbox.roster import sandbox_charge_change, sandbox_roster_control, sandbox_roster_load
from apps.ledger.services import refund_post
from apps.partners.webhooks.models import Event
from apps.reconciliation.api.serializers import ReconciliationRunSerializer
from apps.reconciliation.contracts import LOCK_TTL_SECONDS, SUMMARY_KEYS
from apps.reconciliation.models import Discrepancy, ReconciliationRun, RunStatus
from apps.reconciliation.runner import reconciliation_execute
from apps.reconciliation.services import reconciliation_abandoned_sweep
from apps.reconciliation.tests.conftest import SANDBOX, SYSTEM, WorkerKilled, die, member

pytestmark = pytest.mark.django_db(transaction=True)

ZEROS = dict.fromkeys(SUMMARY_KEYS, 0)


def _cover(policy: Policy, code: str) -> Coverage:
    """Keel starts covering member `code` on `policy` (active)."""
    m = member(code)
    employee = Employee.objects.create(
        employer=policy.employer,
        employee_code=code,
        first_name=m["first_name"],
        last_name=m["last_name"],
        date_of_birth=m["date_of_birth"],
        gender="female",
    )
    return Coverage.objects.create(
        employee=employee, policy=policy, sum_insured=m["sum_insured"], start_date=m["start_date"]
    )


def _coverage(policy: Policy, code: str) -> Coverage:
    return Coverage.objects.select_related("employee").get(policy=policy, employee__employee_code=code, status="active")


def _found(run: ReconciliationRun) -> list[tuple[str, str, str]]:
    return sorted(Discrepancy.objects.filter(run=run).values_list("kind", "employee_code", "field"))


def _event_summary(run: ReconciliationRun) -> dict[str, int]:
    (event,) = Event.objects.filter(type="reconciliation.completed", object_id=str(run.pk))
    return event.data["summary"]


def test_keel_changes_after_the_roster_was_read_are_not_judged_and_the_next_run_judges_them(
    sandbox, covered_policy, start_run
) -> None:
    # Given Keel covering E00000…E00005 and an insurer roster with three real differences from before the run:
    # E00004 missing there, E00005's first name different, X00001 only there.
    policy = covered_policy(6, at_insurer=False)
    sandbox_roster_load(
        code=SANDBOX,
        policy_number=policy.policy_number,
        members=[
            *(member(f"E{n:05d}") for n in range(4)),
            member("E00005", first_name="Ashaa"),
            member("X00001"),
        ],
    )
    changed_at: list[datetime] = []

    def keel_moves(_policy_number: str, _seen: int) -> None:
        # While the run goes on, after the roster page was read, Keel changes.
        added = _cover(policy, "E00010")  # a new member reaches ACTIVE
        coverage_end(coverage=_coverage(policy, "E00001"), end_date=date(2026, 6, 1), endorsement_id=None, actor=SYSTEM)
        renamed = _coverage(policy, "E00002").employee
        renamed.last_name = "Iyer"
        renamed.save()
        coverage_update(
            coverage=_coverage(policy, "E00003"),
            sum_insured=700_000_00,
            employee_diff={},
            endorsement_id=None,
            actor=SYSTEM,
        )
        mailed = _coverage(policy, "E00000").employee  # a change that leaves every compared field equal
        mailed.email = "asha@example.com"
        mailed.save()
        changed_at.append(added.created_at)

    # When the run completes.
    done = reconciliation_execute(
        run_id=start_run(policy).pk, page_size=1000, sleep=lambda _s: None, on_page=keel_moves
    )

    # Then only the differences from before the run are written; the four members Keel changed meanwhile are
    # counted, not reported; the member changed without a difference still matches.
    read_at = datetime.fromisoformat(done.insurer_read_at[str(policy.pk)])
    assert read_at < changed_at[0]
    assert done.status == RunStatus.COMPLETED
    assert _found(done) == [
        ("field_mismatch", "E00005", "first_name"),
        ("missing_at_insurer", "E00004", ""),
        ("missing_internally", "X00001", ""),
    ]
    expected = {
        **ZEROS,
        "matched": 1,
        "missing_at_insurer": 1,
        "missing_internally": 1,
        "field_mismatch": 1,
        "changed_during_run": 4,
    }
    assert ReconciliationRunSerializer(done).data["summary"] == expected
    assert _event_summary(done) == expected
    assert done.rows_matched == 1

    # And a run right after judges them: the insurer never got these changes.
    after = reconciliation_execute(run_id=start_run(policy).pk, page_size=1000, sleep=lambda _s: None)
    assert _found(after) == [
        ("field_mismatch", "E00002", "last_name"),
        ("field_mismatch", "E00003", "sum_insured"),
        ("field_mismatch", "E00005", "first_name"),
        ("missing_at_insurer", "E00004", ""),
        ("missing_at_insurer", "E00010", ""),
        ("missing_internally", "E00001", ""),
        ("missing_internally", "X00001", ""),
    ]
    assert ReconciliationRunSerializer(after).data["summary"] == {
        **ZEROS,
        "matched": 1,
        "missing_at_insurer": 2,
        "missing_internally": 2,
        "field_mismatch": 3,
    }


def test_a_member_keel_added_and_matched_during_the_run_counts_as_matched(sandbox, covered_policy, start_run) -> None:
    # The insurer already holds E00003 when the roster is read; Keel's cover of it reaches ACTIVE afterwards.
    policy = covered_policy(3)
    sandbox_roster_load(
        code=SANDBOX, policy_number=policy.policy_number, members=[member(f"E{n:05d}") for n in range(4)]
    )

    done = reconciliation_execute(
        run_id=start_run(policy).pk,
        page_size=1000,
        sleep=lambda _s: None,
        on_page=lambda _p, _s: _cover(policy, "E00003"),
    )

    assert _found(done) == []
    assert ReconciliationRunSerializer(done).data["summary"] == {**ZEROS, "matched": 4}


def test_a_resumed_run_judges_keel_at_its_first_read_not_at_the_resume(sandbox, covered_policy, start_run) -> None:
    # Given a run whose worker was killed after two pages (E00000…E00003 read) …
    policy = covered_policy(10)
    sandbox_roster_control(code=SANDBOX, throttle_every=3)
    run = start_run(policy)

    with pytest.raises(WorkerKilled):
        reconciliation_execute(run_id=run.pk, page_size=2, sleep=die)
    first_read = ReconciliationRun.objects.get(pk=run.pk).insurer_read_at[str(policy.pk)]
    # … and Keel changing before the run is resumed: a member added among the codes already read, one ended.
    _cover(policy, "E00001X")
    coverage_end(coverage=_coverage(policy, "E00002"), end_date=date(2026, 6, 1), endorsement_id=None, actor=SYSTEM)

    # When the sweep resumes it and the new worker completes it.
    with time_machine.travel(timezone.now() + timedelta(seconds=LOCK_TTL_SECONDS + 5)):
        swept = reconciliation_abandoned_sweep()
    done = reconciliation_execute(run_id=run.pk, attempt=1, page_size=2, sleep=lambda _s: None)

    # Then it judged Keel at the first attempt's read: neither change is reported.
    assert swept == {"resumed": [run.pk], "failed": [], "cancelled": []}
    assert done.insurer_read_at == {str(policy.pk): first_read}
    assert (done.status, done.resumes) == (RunStatus.COMPLETED, 1)
    assert _found(done) == []
    expected = {**ZEROS, "matched": 9, "changed_during_run": 2}
    assert ReconciliationRunSerializer(done).data["summary"] == expected
    assert _event_summary(done) == expected


@pytest.mark.postgres
def test_money_posted_after_the_statement_was_read_is_not_judged(active_policy, start_run, fake_clock) -> None:
    # Given a real difference from before the run (the insurer overcharged the first endorsement) …
    first, second, _ = Endorsement.objects.order_by("pk")
    sandbox_charge_change(code=SANDBOX, endorsement_id=first.pk, amount=first.premium_amount + 100)

    def refund_meanwhile(_policy_number: str, _seen: int) -> None:
        # … and a refund Keel posts for the second while the run goes on.
        refund_post(
            employer_id=active_policy.employer_id,
            amount=10_00,
            reference="refund-during-run",
            endorsement_id=second.pk,
            actor=SYSTEM,
        )

    done = reconciliation_execute(run_id=start_run(active_policy).pk, sleep=fake_clock, on_page=refund_meanwhile)

    assert done.status == RunStatus.COMPLETED
    assert list(Discrepancy.objects.filter(run=done).values_list("kind", "endorsement_id")) == [
        ("amount_mismatch", first.pk)
    ]
    expected = {**ZEROS, "matched": 3, "amount_mismatch": 1, "changed_during_run": 1}
    assert ReconciliationRunSerializer(done).data["summary"] == expected
    assert _event_summary(done) == expected

    # The next run judges the refund: the insurer's statement does not have it.
    after = reconciliation_execute(run_id=start_run(active_policy).pk, sleep=fake_clock)
    assert sorted(Discrepancy.objects.filter(run=after).values_list("kind", "endorsement_id", "keel_value")) == [
        ("amount_mismatch", first.pk, first.premium_amount),
        ("amount_mismatch", second.pk, second.premium_amount - 10_00),
    ]
    assert ReconciliationRunSerializer(after).data["summary"] == {**ZEROS, "matched": 3, "amount_mismatch": 2}
