"""Money reconciliation: endorsements through the real pipeline (API, outbox, ledger, sandbox over HTTP), then
the sandbox's statement of charges against Keel's captures and refunds."""

from __future__ import annotations

from datetime import date

import pytest
from django.utils import timezone

from apps.common.actors import Actor
from apps.employers.models import Coverage
from apps.endorsements import services
from apps.endorsements.models import Endorsement, EndorsementStatus
from apps.endorsements.tests.factories import PolicyFactory, addition
from apps.insurers.sandbox.models import SandboxCharge
from apps.insurers.sandbox.roster import sandbox_charge_change, sandbox_charge_drop, sandbox_roster_load
from apps.insurers.sandbox.setup import sandbox_register
from apps.ledger import services as ledger
from apps.outbox.testing import drain
from apps.reconciliation.models import Discrepancy, RunStatus
from apps.reconciliation.runner import reconciliation_execute
from apps.reconciliation.tests.conftest import SANDBOX

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

SYSTEM = Actor.system("tests")
TODAY = date(2026, 6, 1)


@pytest.fixture
def active_policy(live_server, make_key, time_machine, require_postgres):
    """A sandbox-rest policy with three additions ACTIVE through the pipeline, the sandbox roster matching."""
    time_machine.move_to(timezone.make_aware(timezone.datetime(2026, 6, 1, 10, 0)), tick=True)
    [insurer] = sandbox_register(base_url=live_server.url)
    policy = PolicyFactory(insurer=insurer)
    client = make_key(partner=policy.employer.partner, all_employers=True)
    ledger.topup_post(employer_id=policy.employer_id, amount=1_000_000_00, reference="topup-recon", actor=SYSTEM)
    for n in range(3):
        response = client.post("/api/v1/endorsements", addition(policy, f"M-{n}", effective=TODAY))
        assert response.status_code == 202, response.content
    for _ in range(6):
        drain()
        if not services.scheduler_tick(actor=SYSTEM, force=True):
            drain()
            break
    assert set(Endorsement.objects.values_list("status", flat=True)) == {EndorsementStatus.ACTIVE}
    sandbox_roster_load(
        code=SANDBOX,
        policy_number=policy.policy_number,
        members=[
            {
                "employee_code": c.employee.employee_code,
                "first_name": c.employee.first_name,
                "last_name": c.employee.last_name,
                "date_of_birth": c.employee.date_of_birth,
                "sum_insured": c.sum_insured,
                "start_date": c.start_date,
            }
            for c in Coverage.objects.select_related("employee").filter(policy=policy)
        ],
    )
    return policy


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
        Discrepancy.objects.filter(run=done).values_list("kind", "endorsement_id", "keel_value", "insurer_value")
    )
    assert found == [
        ("amount_mismatch", first.pk, first.premium_amount, first.premium_amount + 100),
        ("charge_missing", second.pk, second.premium_amount, None),
    ]
    assert (done.summary["amount_mismatch"], done.summary["charge_missing"], done.summary["matched"]) == (1, 1, 3)
