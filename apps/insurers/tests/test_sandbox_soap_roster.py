"""The SOAP sandbox's roster follows what Keel sends over SOAP (issue 11, item 1): endorsements through the real
API, outbox, scheduler, SOAP gateway (zeep) and sandbox over HTTP reach ACTIVE, and a reconciliation run over
SOAP (`GetRoster` / `GetStatement`) then finds every member, or exactly one discrepancy per drift kind.

Before the fix the SOAP face kept only `employeeCode` and `dateOfBirth` of a member, so its roster stayed
empty and every member was `missing_at_insurer`."""

from __future__ import annotations

from datetime import date

import pytest
from django.utils import timezone

from apps.common.actors import Actor
from apps.employers.models import Policy
from apps.endorsements.models import Endorsement, EndorsementStatus
from apps.endorsements.tests.factories import PolicyFactory, addition, correction, deletion
from apps.endorsements.tests.pipeline import run_pipeline
from apps.insurers.models import InsurerProtocol
from apps.insurers.sandbox.models import SandboxRosterMember
from apps.insurers.sandbox.roster import sandbox_drift_apply
from apps.insurers.sandbox.setup import sandbox_register
from apps.ledger import services as ledger
from apps.reconciliation.models import Discrepancy, ReconciliationRun, RunStatus
from apps.reconciliation.runner import reconciliation_execute
from apps.reconciliation.selectors import scope_employer_ids
from apps.reconciliation.services import reconciliation_start

pytestmark = pytest.mark.django_db(transaction=True)

SYSTEM = Actor.system("tests")
TODAY = date(2026, 6, 1)
SOAP = "sandbox-soap"


def _reconcile(policy: Policy) -> ReconciliationRun:
    run = reconciliation_start(
        insurer_id=policy.insurer_id,
        employer_ids=scope_employer_ids(insurer_id=policy.insurer_id, employer_id=policy.employer_id),
        employer_id=policy.employer_id,
        policy_id=None,
        partner_id=None,
        actor=SYSTEM,
        queue=False,
    )
    return reconciliation_execute(run_id=run.pk, page_size=2, sleep=lambda seconds: None)


@pytest.fixture
def soap_policy(live_server, make_key, time_machine, require_postgres) -> Policy:
    """Six additions, then a correction of one member's last name and a deletion of another, all through the
    API and the SOAP gateway: five members covered, every endorsement ACTIVE."""
    time_machine.move_to(timezone.make_aware(timezone.datetime(2026, 6, 1, 10, 0)), tick=True)
    [insurer] = sandbox_register(base_url=live_server.url, codes=(SOAP,))
    assert insurer.protocol == InsurerProtocol.SOAP
    policy = PolicyFactory(insurer=insurer)
    client = make_key(partner=policy.employer.partner, all_employers=True)
    ledger.topup_post(employer_id=policy.employer_id, amount=1_000_000_00, reference="topup-soap", actor=SYSTEM)
    for n in range(6):
        response = client.post("/api/v1/endorsements", addition(policy, f"S-{n}", effective=TODAY))
        assert response.status_code == 202, response.content
    run_pipeline(rounds=8)
    for body in (
        correction(policy, "S-1", effective=TODAY, last_name="Iyer"),
        deletion(policy, "S-5", effective=TODAY),
    ):
        response = client.post("/api/v1/endorsements", body)
        assert response.status_code == 202, response.content
    run_pipeline(rounds=8)
    statuses = list(Endorsement.objects.order_by("id").values_list("type", "status"))
    assert statuses == [("addition", EndorsementStatus.ACTIVE)] * 6 + [
        ("correction", EndorsementStatus.ACTIVE),
        ("deletion", EndorsementStatus.ACTIVE),
    ]
    return policy


def test_soap_roster_follows_what_keel_sent_and_reconciles_clean(soap_policy) -> None:
    roster = {
        m.employee_code: (m.first_name, m.last_name, m.date_of_birth, m.sum_insured, m.start_date)
        for m in SandboxRosterMember.objects.filter(code=SOAP, policy_number=soap_policy.policy_number)
    }

    done = _reconcile(soap_policy)

    assert roster == {
        "S-0": ("Asha", "Rao", date(1990, 5, 17), 500_000_00, TODAY),
        "S-1": ("Asha", "Iyer", date(1990, 5, 17), 500_000_00, TODAY),
        "S-2": ("Asha", "Rao", date(1990, 5, 17), 500_000_00, TODAY),
        "S-3": ("Asha", "Rao", date(1990, 5, 17), 500_000_00, TODAY),
        "S-4": ("Asha", "Rao", date(1990, 5, 17), 500_000_00, TODAY),
    }
    assert done.status == RunStatus.COMPLETED, done.error
    assert (done.rows_pulled, done.rows_matched) == (5, 5)
    assert Discrepancy.objects.filter(run=done).count() == 0


def test_soap_drift_of_each_kind_is_found_exactly_once(soap_policy) -> None:
    number = soap_policy.policy_number
    by_code = {e.employee_code: e for e in Endorsement.objects.filter(type="addition")}
    wrong_charge, no_charge = by_code["S-3"], by_code["S-4"]
    for spec in (
        "drop_member:S-0",
        "change:S-2:date_of_birth=1979-12-31",
        "add_member:X-ONLY:Ravi:Iyer:1985-03-04:300000.00",
        f"charge_amount:{wrong_charge.pk}:9.99",
        f"drop_charge:{no_charge.pk}",
    ):
        sandbox_drift_apply(code=SOAP, policy_number=number, spec=spec)

    done = _reconcile(soap_policy)

    assert done.status == RunStatus.COMPLETED, done.error
    found = sorted(Discrepancy.objects.filter(run=done).values_list("kind", "employee_code", "field", "endorsement_id"))
    assert found == sorted(
        [
            ("missing_at_insurer", "S-0", "", None),
            ("field_mismatch", "S-2", "date_of_birth", None),
            ("missing_internally", "X-ONLY", "", None),
            ("amount_mismatch", "S-3", "", wrong_charge.pk),
            ("charge_missing", "S-4", "", no_charge.pk),
        ]
    )
