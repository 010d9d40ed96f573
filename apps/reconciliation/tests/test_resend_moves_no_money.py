"""A `resend` brings the insurer in line with what Keel covers and moves **no money** (ADR 0057): Keel already
charged the employer for the cover it holds, so neither direction of a sum-insured drift owes the employer or
Keel anything; the insurer's own charges are the statement money match's to judge. Over REST (the sandbox
answers at once) and over files (a batch file, the sandbox's result file, the importer), where the answer to a
resend — no Keel endorsement, so nothing to echo as `endorsement_id` — is imported, never quarantined."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.common.errors import DomainValidationError
from apps.employers.models import Coverage
from apps.insurers.files.importer import result_files_import
from apps.insurers.sandbox.files import sandbox_file_process
from apps.insurers.sandbox.models import SandboxRosterMember
from apps.insurers.sandbox.roster import sandbox_roster_change
from apps.ledger.models import Hold, LedgerAccount, LedgerTransaction
from apps.outbox.models import OutboxMessage
from apps.outbox.testing import drain
from apps.reconciliation.models import Discrepancy, RunStatus
from apps.reconciliation.runner import reconciliation_execute
from apps.reconciliation.services import discrepancy_resolve
from apps.reconciliation.tests.conftest import SANDBOX, SYSTEM
from apps.reconciliation.tests.test_file_statement import FILE, file_policy  # noqa: F401 (fixture)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

KEEL_SI = 500_000_00  # paise: what Keel covers (and charged for) for M-1


def _si_mismatch(policy, start_run, fake_clock, insurer_si: int, code: str = SANDBOX) -> Discrepancy:
    sandbox_roster_change(code=code, policy_number=policy.policy_number, employee_code="M-1", sum_insured=insurer_si)
    run = reconciliation_execute(run_id=start_run(policy).pk, sleep=fake_clock)
    assert run.status == RunStatus.COMPLETED, run.error
    d = Discrepancy.objects.get(run=run, kind="field_mismatch")
    assert (d.field, d.keel_value, d.insurer_value) == ("sum_insured", KEEL_SI, insurer_si)
    return d


def _money(employer_id: int) -> tuple[int, int, int, int]:
    account = LedgerAccount.objects.get(employer_id=employer_id)
    return account.posted, account.held, Hold.objects.count(), LedgerTransaction.objects.count()


def _insurer_si(policy, code: str = SANDBOX) -> int:
    return SandboxRosterMember.objects.get(
        code=code, policy_number=policy.policy_number, employee_code="M-1"
    ).sum_insured


@pytest.mark.parametrize("insurer_si", [300_000_00, 700_000_00], ids=["insurer_lower", "insurer_higher"])
def test_resend_corrects_the_insurers_sum_insured_and_moves_no_money_either_way(
    active_policy, start_run, fake_clock, insurer_si, make_key
) -> None:
    policy = active_policy
    d = _si_mismatch(policy, start_run, fake_clock, insurer_si)
    before = _money(policy.employer_id)
    client = make_key(partner=policy.employer.partner, all_employers=True)

    response = client.post(f"/api/v1/discrepancies/{d.pk}/resolve", {"action": "resend", "note": "Keel is right"})

    assert response.status_code == 200, response.content
    assert response.json()["resolution_result"] == {"resend_key": f"reconciliation-resend-{d.pk}"}
    assert _money(policy.employer_id) == before
    drain()
    d.refresh_from_db()
    assert (d.resolution_result["resend_outcome"], _insurer_si(policy)) == ("confirmed", KEEL_SI)
    assert _money(policy.employer_id) == before  # confirmed: still nothing held, captured or refunded
    again = reconciliation_execute(run_id=start_run(policy).pk, sleep=fake_clock)
    assert (again.summary["matched"], Discrepancy.objects.filter(run=again).count()) == (3, 0)
    drain()  # a redelivery sends and moves nothing
    assert _money(policy.employer_id) == before


def test_resend_of_a_member_keel_no_longer_covers_is_a_422_on_action_and_changes_nothing(
    active_policy, start_run, fake_clock
) -> None:
    policy = active_policy
    d = _si_mismatch(policy, start_run, fake_clock, 300_000_00)
    Coverage.objects.filter(policy=policy, employee__employee_code="M-1").update(status="ended")
    before = (_money(policy.employer_id), OutboxMessage.objects.count(), AuditEvent.objects.count())

    with pytest.raises(DomainValidationError) as refused:
        discrepancy_resolve(discrepancy_id=d.pk, action="resend", note="Keel is right", actor=SYSTEM)

    assert refused.value.errors == {"action": ["Keel no longer covers this member: nothing to resend."]}
    d.refresh_from_db()
    assert (d.status, d.resolution_action, d.resolution_result) == ("open", "", {})
    assert (_money(policy.employer_id), OutboxMessage.objects.count(), AuditEvent.objects.count()) == before


def test_file_insurer_answers_a_resend_by_result_file_and_the_importer_takes_it(
    file_policy,  # noqa: F811
    start_run,
    fake_clock,
) -> None:
    policy, root = file_policy
    answer_roster = _answering_roster(root)
    sandbox_roster_change(code=FILE, policy_number=policy.policy_number, employee_code="M-1", sum_insured=300_000_00)
    run = reconciliation_execute(run_id=start_run(policy).pk, sleep=answer_roster)
    assert run.status == RunStatus.COMPLETED, run.error
    d = Discrepancy.objects.get(run=run, kind="field_mismatch")
    before = _money(policy.employer_id)

    discrepancy_resolve(discrepancy_id=d.pk, action="resend", note="Keel is right", actor=SYSTEM)
    drain()  # the consumer writes the batch file
    assert sandbox_file_process(code=FILE) == 1
    imported = result_files_import(insurer_code=FILE)

    assert (imported["imported"], imported["quarantined"]) == (1, 0)
    assert list((root / "inbound" / "quarantine").glob("*")) == []
    assert _insurer_si(policy, FILE) == KEEL_SI
    assert _money(policy.employer_id) == before


def _answering_roster(root):
    from apps.insurers.sandbox.roster_files import sandbox_roster_requests_answer

    def wait(seconds: float) -> None:
        sandbox_roster_requests_answer(code=FILE)

    return wait
