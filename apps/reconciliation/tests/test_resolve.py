"""Each resolve action does what it says through the normal intake — the endorsement goes through the pipeline
to ACTIVE — and the next run no longer finds that discrepancy (issue 12)."""

from __future__ import annotations

from datetime import date

import pytest

from apps.common.errors import Conflict
from apps.employers.models import Coverage, Employee
from apps.endorsements.models import Endorsement, EndorsementStatus
from apps.endorsements.tests.pipeline import run_pipeline
from apps.insurers.sandbox.roster import sandbox_roster_change, sandbox_roster_drop, sandbox_roster_load
from apps.reconciliation.models import Discrepancy, RunStatus
from apps.reconciliation.runner import reconciliation_execute
from apps.reconciliation.services import discrepancy_resolve
from apps.reconciliation.tests.conftest import SANDBOX, SYSTEM, TODAY, member

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def _run(policy, start_run, fake_clock):
    done = reconciliation_execute(run_id=start_run(policy).pk, sleep=fake_clock)
    assert done.status == RunStatus.COMPLETED
    return done


def test_each_create_action_goes_through_the_pipeline_and_the_next_run_is_clean(
    active_policy, start_run, fake_clock
) -> None:
    policy = active_policy
    number = policy.policy_number
    sandbox_roster_drop(code=SANDBOX, policy_number=number, employee_code="M-0")
    sandbox_roster_change(code=SANDBOX, policy_number=number, employee_code="M-1", date_of_birth=date(1991, 2, 3))
    sandbox_roster_load(
        code=SANDBOX,
        policy_number=number,
        members=[member("N-9", first_name="Ravi", last_name="Iyer", start_date=TODAY, sum_insured=500_000_00)],
    )
    first = _run(policy, start_run, fake_clock)
    by_kind = {d.kind: d for d in Discrepancy.objects.filter(run=first)}
    assert set(by_kind) == {"missing_at_insurer", "missing_internally", "field_mismatch"}

    deletion = discrepancy_resolve(
        discrepancy_id=by_kind["missing_at_insurer"].pk, action="create_deletion", note="left", actor=SYSTEM
    )
    addition = discrepancy_resolve(
        discrepancy_id=by_kind["missing_internally"].pk,
        action="create_addition",
        note="joined",
        gender="male",
        actor=SYSTEM,
    )
    correction = discrepancy_resolve(
        discrepancy_id=by_kind["field_mismatch"].pk, action="create_correction", note="insurer right", actor=SYSTEM
    )
    run_pipeline()

    created = [d.resolution_result["endorsement_id"] for d in (deletion, addition, correction)]
    assert list(Endorsement.objects.filter(pk__in=created).order_by("pk").values_list("type", "status")) == [
        ("deletion", EndorsementStatus.ACTIVE),
        ("addition", EndorsementStatus.ACTIVE),
        ("correction", EndorsementStatus.ACTIVE),
    ]
    assert not Coverage.objects.filter(policy=policy, employee__employee_code="M-0", status="active").exists()
    assert Employee.objects.get(employee_code="M-1").date_of_birth == date(1991, 2, 3)
    assert Coverage.objects.filter(policy=policy, employee__employee_code="N-9", status="active").exists()

    # No roster reload: the sandbox's roster followed the endorsements it confirmed.
    second = _run(policy, start_run, fake_clock)
    assert list(Discrepancy.objects.filter(run=second).values_list("kind", "employee_code")) == []
    assert second.summary["matched"] == 3


def test_resolving_twice_returns_the_first_result_and_submits_once(active_policy, start_run, fake_clock) -> None:
    sandbox_roster_drop(code=SANDBOX, policy_number=active_policy.policy_number, employee_code="M-2")
    d = Discrepancy.objects.get(run=_run(active_policy, start_run, fake_clock))
    before = Endorsement.objects.count()

    first = discrepancy_resolve(discrepancy_id=d.pk, action="create_deletion", note="a", actor=SYSTEM)
    again = discrepancy_resolve(discrepancy_id=d.pk, action="create_deletion", note="b", actor=SYSTEM)
    with pytest.raises(Conflict):  # another action on a resolved one is 409, never a silent success
        discrepancy_resolve(discrepancy_id=d.pk, action="ignore", note="b", actor=SYSTEM)

    assert (again.status, again.resolution_action, again.resolution_result) == (
        "resolved",
        "create_deletion",
        first.resolution_result,
    )
    assert Endorsement.objects.count() == before + 1


def test_resend_corrects_the_insurer_without_touching_keel_or_money(active_policy, start_run, fake_clock) -> None:
    from apps.ledger.models import LedgerTransaction
    from apps.outbox.testing import drain

    policy = active_policy
    number = policy.policy_number
    sandbox_roster_drop(code=SANDBOX, policy_number=number, employee_code="M-0")
    sandbox_roster_change(code=SANDBOX, policy_number=number, employee_code="M-1", date_of_birth=date(1991, 2, 3))
    first = _run(policy, start_run, fake_clock)
    missing = Discrepancy.objects.get(run=first, kind="missing_at_insurer")
    mismatch = Discrepancy.objects.get(run=first, kind="field_mismatch")
    endorsements, money = Endorsement.objects.count(), LedgerTransaction.objects.count()

    discrepancy_resolve(discrepancy_id=missing.pk, action="resend", note="insurer lost it", actor=SYSTEM)
    discrepancy_resolve(discrepancy_id=mismatch.pk, action="resend", note="Keel is right", actor=SYSTEM)
    drain()

    for d in (missing, mismatch):
        d.refresh_from_db()
        assert (d.status, d.resolution_result["resend_outcome"]) == ("resolved", "confirmed")
    assert (Endorsement.objects.count(), LedgerTransaction.objects.count()) == (endorsements, money)
    assert Employee.objects.get(employee_code="M-1").date_of_birth == date(1990, 5, 17)
    second = _run(policy, start_run, fake_clock)
    assert list(Discrepancy.objects.filter(run=second).values_list("kind", "employee_code")) == []
    assert second.summary["matched"] == 3


def test_request_insurer_deletion_removes_the_insurers_member_and_touches_no_keel_cover(
    active_policy, start_run, fake_clock
) -> None:
    from apps.outbox.testing import drain

    sandbox_roster_load(code=SANDBOX, policy_number=active_policy.policy_number, members=[member("X-1")])
    extra = Discrepancy.objects.get(run=_run(active_policy, start_run, fake_clock))
    assert extra.kind == "missing_internally"
    endorsements, covers = Endorsement.objects.count(), Coverage.objects.count()

    discrepancy_resolve(discrepancy_id=extra.pk, action="request_insurer_deletion", note="not ours", actor=SYSTEM)
    drain()

    extra.refresh_from_db()
    assert (extra.status, extra.resolution_result["resend_outcome"]) == ("resolved", "confirmed")
    assert (Endorsement.objects.count(), Coverage.objects.count()) == (endorsements, covers)
    assert list(Discrepancy.objects.filter(run=_run(active_policy, start_run, fake_clock))) == []
