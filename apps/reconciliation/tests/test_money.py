"""Money reconciliation: endorsements through the real pipeline (API, outbox, ledger, sandbox over HTTP), then
the sandbox's statement of charges against Keel's captures and refunds."""

from __future__ import annotations

import pytest

from apps.endorsements.models import Endorsement
from apps.insurers.sandbox.models import SandboxCharge
from apps.insurers.sandbox.roster import sandbox_charge_change, sandbox_charge_drop
from apps.reconciliation.models import Discrepancy, RunStatus
from apps.reconciliation.runner import reconciliation_execute
from apps.reconciliation.tests.conftest import SANDBOX

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]


def test_statement_matching_the_ledger_gives_no_discrepancy(active_policy, start_run, fake_clock) -> None:
    assert SandboxCharge.objects.count() == 3
    run = start_run(active_policy)

    done = reconciliation_execute(run_id=run.pk, sleep=fake_clock)

    assert done.status == RunStatus.COMPLETED
    assert done.summary["matched"] == 3
    assert Discrepancy.objects.count() == 0


def test_wrong_charge_and_missing_charge_are_each_found(active_policy, start_run, fake_clock) -> None:
    first, second, _ = Endorsement.objects.order_by("pk")
    sandbox_charge_change(code=SANDBOX, endorsement_id=first.pk, amount=first.premium_amount + 100)
    sandbox_charge_drop(code=SANDBOX, endorsement_id=second.pk)
    run = start_run(active_policy)

    done = reconciliation_execute(run_id=run.pk, sleep=fake_clock)

    found = sorted(
        Discrepancy.objects.filter(run=done).values_list(
            "kind", "endorsement_id", "employee_code", "keel_value", "insurer_value"
        )
    )
    # Each names the member whose charge it is, from the endorsement it concerns.
    assert (first.employee_code, second.employee_code) == ("M-0", "M-1")
    assert found == [
        ("amount_mismatch", first.pk, "M-0", first.premium_amount, first.premium_amount + 100),
        ("charge_missing", second.pk, "M-1", second.premium_amount, None),
    ]
    assert (done.summary["amount_mismatch"], done.summary["charge_missing"], done.summary["matched"]) == (1, 1, 3)


def test_a_charge_keel_has_no_endorsement_for_names_no_member(active_policy) -> None:
    from apps.endorsements.tests.factories import PolicyFactory
    from apps.reconciliation.selectors import endorsement_employee_codes

    first = Endorsement.objects.order_by("pk").first()
    other_policy = PolicyFactory()

    codes = endorsement_employee_codes(policy_id=active_policy.pk, endorsement_ids=[first.pk, first.pk + 10_000, None])
    elsewhere = endorsement_employee_codes(policy_id=other_policy.pk, endorsement_ids=[first.pk])

    assert (codes, elsewhere) == ({first.pk: "M-0"}, {})


def test_settled_money_differences_are_not_found_again_until_a_side_changes(
    active_policy, start_run, fake_clock
) -> None:
    from apps.reconciliation.services import discrepancy_resolve
    from apps.reconciliation.tests.conftest import SYSTEM

    first, second, _ = Endorsement.objects.order_by("pk")
    sandbox_charge_change(code=SANDBOX, endorsement_id=first.pk, amount=first.premium_amount + 100)
    sandbox_charge_drop(code=SANDBOX, endorsement_id=second.pk)
    found = reconciliation_execute(run_id=start_run(active_policy).pk, sleep=fake_clock)
    wrong = Discrepancy.objects.get(run=found, kind="amount_mismatch")
    missing = Discrepancy.objects.get(run=found, kind="charge_missing")
    discrepancy_resolve(discrepancy_id=wrong.pk, action="flag_for_finance", note="", actor=SYSTEM)
    discrepancy_resolve(discrepancy_id=missing.pk, action="ignore", note="waived by the insurer", actor=SYSTEM)

    again = reconciliation_execute(run_id=start_run(active_policy).pk, sleep=fake_clock)
    sandbox_charge_change(code=SANDBOX, endorsement_id=first.pk, amount=first.premium_amount + 200)
    changed = reconciliation_execute(run_id=start_run(active_policy).pk, sleep=fake_clock)

    assert Discrepancy.objects.filter(run=again).count() == 0
    assert (again.summary["accepted"], again.summary["amount_mismatch"], again.summary["charge_missing"]) == (2, 0, 0)
    assert list(Discrepancy.objects.filter(run=changed).values_list("kind", "insurer_value")) == [
        ("amount_mismatch", first.premium_amount + 200)
    ]
    assert changed.summary["accepted"] == 1
