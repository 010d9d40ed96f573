"""A `resend` of a field mismatch when the insurer holds another sum insured is priced pro-rata like any
correction and goes through holds and captures (ADR 0051); a refused one changes nothing.

Figures: policy 2026-04-01 – 2027-03-31 (term 365 days) at 4.5 ‰, resolved on 2026-06-01 (304 days remain).
The insurer holds ₹3,00,000.00, Keel ₹5,00,000.00: (50,000,000 − 30,000,000) × 4.5 / 1000 × 304 / 365
= 90,000 × 304 / 365 = 74,958.90… paise → 74,959 paise (₹749.59) debit. The reverse is the same credit.
"""

from __future__ import annotations

from datetime import date

import pytest

from apps.audit.models import AuditEvent
from apps.common.errors import Conflict, DomainValidationError
from apps.employers.models import Coverage, Policy
from apps.insurers.sandbox.callbacks import wait_for_callbacks
from apps.insurers.sandbox.models import SandboxConfig, SandboxRosterMember
from apps.insurers.sandbox.roster import sandbox_roster_change
from apps.insurers.sandbox.service import sandbox_configure
from apps.ledger import services as ledger
from apps.ledger.models import Hold, HoldResolution, LedgerAccount, LedgerTransaction
from apps.outbox.models import OutboxMessage
from apps.outbox.testing import drain
from apps.reconciliation.contracts import ResolutionNotAllowedError
from apps.reconciliation.models import Discrepancy, RunStatus
from apps.reconciliation.runner import reconciliation_execute
from apps.reconciliation.services import discrepancy_resolve, resend_pending_settle
from apps.reconciliation.tests.conftest import SANDBOX, SYSTEM

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

PREMIUM = 74_959  # paise, see the module docstring
REFERENCE = "reconciliation-resend-{}"


def _si_mismatch(policy, start_run, fake_clock, insurer_si: int) -> Discrepancy:
    sandbox_roster_change(code=SANDBOX, policy_number=policy.policy_number, employee_code="M-1", sum_insured=insurer_si)
    run = reconciliation_execute(run_id=start_run(policy).pk, sleep=fake_clock)
    assert run.status == RunStatus.COMPLETED
    d = Discrepancy.objects.get(run=run)
    assert (d.kind, d.field, d.keel_value, d.insurer_value) == ("field_mismatch", "sum_insured", 500_000_00, insurer_si)
    return d


def _account(employer_id: int) -> tuple[int, int]:
    account = LedgerAccount.objects.get(employer_id=employer_id)
    return account.posted, account.held


def _insurer_si(policy) -> int:
    return SandboxRosterMember.objects.get(
        code=SANDBOX, policy_number=policy.policy_number, employee_code="M-1"
    ).sum_insured


def test_resend_raising_the_insurers_sum_insured_holds_then_captures_the_prorata_premium(
    active_policy, start_run, fake_clock
) -> None:
    policy = active_policy
    d = _si_mismatch(policy, start_run, fake_clock, insurer_si=300_000_00)
    posted, held = _account(policy.employer_id)

    resolved = discrepancy_resolve(discrepancy_id=d.pk, action="resend", note="Keel is right", actor=SYSTEM)

    assert resolved.resolution_result == {
        "resend_key": REFERENCE.format(d.pk),
        "sum_insured": 500_000_00,
        "effective_date": "2026-06-01",
        "premium_amount": PREMIUM,
        "premium_direction": "debit",
        "hold_reference": REFERENCE.format(d.pk),
    }
    assert _account(policy.employer_id) == (posted, held + PREMIUM)
    assert Hold.objects.get(reference=REFERENCE.format(d.pk)).amount == PREMIUM

    drain()

    d.refresh_from_db()
    assert d.resolution_result["resend_outcome"] == "confirmed"
    capture = LedgerTransaction.objects.get(reference=REFERENCE.format(d.pk), kind="capture")
    assert (capture.amount, d.resolution_result["capture_transaction_id"]) == (PREMIUM, capture.pk)
    assert _account(policy.employer_id) == (posted - PREMIUM, held)
    assert _insurer_si(policy) == 500_000_00
    # The next run finds the insurer corrected.
    again = reconciliation_execute(run_id=start_run(policy).pk, sleep=fake_clock)
    assert (again.summary["matched"], Discrepancy.objects.filter(run=again).count()) == (3, 0)
    # Redelivering the message captures nothing twice.
    drain()
    assert LedgerTransaction.objects.filter(reference=REFERENCE.format(d.pk)).count() == 1


def test_resend_lowering_the_insurers_sum_insured_refunds_the_prorata_premium_on_confirmation(
    active_policy, start_run, fake_clock
) -> None:
    policy = active_policy
    d = _si_mismatch(policy, start_run, fake_clock, insurer_si=700_000_00)
    posted, held = _account(policy.employer_id)

    resolved = discrepancy_resolve(discrepancy_id=d.pk, action="resend", note="Keel is right", actor=SYSTEM)

    assert (resolved.resolution_result["premium_amount"], resolved.resolution_result["premium_direction"]) == (
        PREMIUM,
        "credit",
    )
    assert "hold_reference" not in resolved.resolution_result
    assert _account(policy.employer_id) == (posted, held)  # nothing moves before the insurer confirms

    drain()

    refund = LedgerTransaction.objects.get(reference=f"{REFERENCE.format(d.pk)}-refund")
    assert (refund.kind, refund.amount) == ("refund", PREMIUM)
    assert _account(policy.employer_id) == (posted + PREMIUM, held)
    assert _insurer_si(policy) == 500_000_00


def test_resend_the_insurer_rejects_releases_its_hold_and_captures_nothing(
    active_policy, start_run, fake_clock
) -> None:
    policy = active_policy
    d = _si_mismatch(policy, start_run, fake_clock, insurer_si=300_000_00)
    SandboxConfig.objects.update_or_create(
        code=SANDBOX, defaults={"rejection_rules": [{"kind": "correction", "reason": "no"}]}
    )
    posted, held = _account(policy.employer_id)

    discrepancy_resolve(discrepancy_id=d.pk, action="resend", note="Keel is right", actor=SYSTEM)
    drain()

    d.refresh_from_db()
    assert (d.resolution_result["resend_outcome"], d.resolution_result["hold_released"]) == ("rejected", True)
    assert HoldResolution.objects.get(hold__reference=REFERENCE.format(d.pk)).kind == "released"
    assert not LedgerTransaction.objects.filter(reference=REFERENCE.format(d.pk), kind="capture").exists()
    assert _account(policy.employer_id) == (posted, held)
    assert _insurer_si(policy) == 300_000_00


def test_resend_the_balance_cannot_hold_is_refused_and_changes_nothing(active_policy, start_run, fake_clock) -> None:
    policy = active_policy
    d = _si_mismatch(policy, start_run, fake_clock, insurer_si=300_000_00)
    posted, held = _account(policy.employer_id)
    # Leave one paisa less than the premium available.
    ledger.hold_place(
        employer_id=policy.employer_id, amount=posted - held - (PREMIUM - 1), reference="drain", actor=SYSTEM
    )
    before = (
        _account(policy.employer_id),
        Hold.objects.count(),
        LedgerTransaction.objects.count(),
        OutboxMessage.objects.count(),
        AuditEvent.objects.count(),
    )

    with pytest.raises(Conflict) as refused:
        discrepancy_resolve(discrepancy_id=d.pk, action="resend", note="Keel is right", actor=SYSTEM)

    assert refused.value.slug == "insufficient-funds"
    d.refresh_from_db()
    assert (d.status, d.resolution_action, d.resolution_result) == ("open", "", {})
    assert (
        _account(policy.employer_id),
        Hold.objects.count(),
        LedgerTransaction.objects.count(),
        OutboxMessage.objects.count(),
        AuditEvent.objects.count(),
    ) == before


def test_resend_refused_over_the_api_is_a_409_problem_naming_the_premium(
    active_policy, start_run, fake_clock, make_key
) -> None:
    policy = active_policy
    d = _si_mismatch(policy, start_run, fake_clock, insurer_si=300_000_00)
    posted, held = _account(policy.employer_id)
    ledger.hold_place(employer_id=policy.employer_id, amount=posted - held, reference="drain", actor=SYSTEM)
    client = make_key(partner=policy.employer.partner, all_employers=True)

    response = client.post(f"/api/v1/discrepancies/{d.pk}/resolve", {"action": "resend", "note": "Keel is right"})

    assert response.status_code == 409
    assert response["Content-Type"].startswith("application/problem+json")
    assert response.json()["premium_amount"] == "749.59"
    d.refresh_from_db()
    assert d.status == "open"


def _pending_resend(policy, start_run, fake_clock) -> Discrepancy:
    """A priced resend (debit, held) the sandbox answers `pending` (callback mode); its callback names endorsement
    0, which the callback path does not know, so nothing settles it."""
    d = _si_mismatch(policy, start_run, fake_clock, insurer_si=300_000_00)
    sandbox_configure(code=SANDBOX, mode="callback")
    discrepancy_resolve(discrepancy_id=d.pk, action="resend", note="Keel is right", actor=SYSTEM)
    drain()
    assert wait_for_callbacks()
    drain()
    d.refresh_from_db()
    unresolved = not HoldResolution.objects.filter(hold__reference=REFERENCE.format(d.pk)).exists()
    assert (d.resolution_result["resend_outcome"], unresolved) == ("pending", True)
    return d


def test_resend_answered_pending_is_listed_and_an_operator_confirming_it_captures_its_hold(
    active_policy, start_run, fake_clock, admin_client
) -> None:
    policy = active_policy
    d = _pending_resend(policy, start_run, fake_clock)
    posted, held = _account(policy.employer_id)
    assert held >= PREMIUM

    listed = admin_client.get("/admin/reconciliation/discrepancy/?resend_outcome=pending")
    acted = admin_client.post(
        "/admin/reconciliation/discrepancy/",
        {"action": "pending_resend_confirmed", "_selected_action": [d.pk]},
        follow=True,
    )

    assert (listed.status_code, list(listed.context["cl"].result_list)) == (200, [d])
    assert acted.status_code == 200
    d.refresh_from_db()
    capture = LedgerTransaction.objects.get(reference=REFERENCE.format(d.pk), kind="capture")
    assert (d.resolution_result["resend_outcome"], d.resolution_result["capture_transaction_id"]) == (
        "confirmed",
        capture.pk,
    )
    assert (capture.amount, _account(policy.employer_id)) == (PREMIUM, (posted - PREMIUM, held - PREMIUM))
    assert AuditEvent.objects.filter(action="reconciliation.resend_settled", object_id=str(d.pk)).count() == 1


def test_resend_answered_pending_an_operator_rejects_releases_its_hold_once(
    active_policy, start_run, fake_clock
) -> None:
    policy = active_policy
    d = _pending_resend(policy, start_run, fake_clock)
    posted, held = _account(policy.employer_id)

    resend_pending_settle(discrepancy_id=d.pk, outcome="rejected", actor=SYSTEM)

    d.refresh_from_db()
    assert (d.resolution_result["resend_outcome"], d.resolution_result["hold_released"]) == ("rejected", True)
    assert HoldResolution.objects.get(hold__reference=REFERENCE.format(d.pk)).kind == "released"
    assert _account(policy.employer_id) == (posted, held - PREMIUM)
    # Settled once: a second settlement is refused and changes nothing.
    with pytest.raises(ResolutionNotAllowedError):
        resend_pending_settle(discrepancy_id=d.pk, outcome="confirmed", actor=SYSTEM)
    assert not LedgerTransaction.objects.filter(reference=REFERENCE.format(d.pk), kind="capture").exists()
    assert _account(policy.employer_id) == (posted, held - PREMIUM)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("term_ended", "does not cover today"),
        ("cover_ended", "Keel no longer covers this member"),
    ],
)
def test_resend_that_cannot_be_priced_is_a_422_on_action_and_changes_nothing(
    active_policy, start_run, fake_clock, change, message
) -> None:
    policy = active_policy
    d = _si_mismatch(policy, start_run, fake_clock, insurer_si=300_000_00)
    if change == "term_ended":
        Policy.objects.filter(pk=policy.pk).update(end_date=date(2026, 5, 31))
    else:
        Coverage.objects.filter(policy=policy, employee__employee_code="M-1").update(status="ended")
    before = (Hold.objects.count(), OutboxMessage.objects.count(), AuditEvent.objects.count())

    with pytest.raises(DomainValidationError) as refused:
        discrepancy_resolve(discrepancy_id=d.pk, action="resend", note="Keel is right", actor=SYSTEM)

    assert list(refused.value.errors) == ["action"]
    assert message in str(refused.value.errors["action"])
    d.refresh_from_db()
    assert (d.status, d.resolution_result) == ("open", {})
    assert (Hold.objects.count(), OutboxMessage.objects.count(), AuditEvent.objects.count()) == before


def test_resend_resolved_over_the_api_shows_its_price_in_rupees(active_policy, start_run, fake_clock, make_key) -> None:
    policy = active_policy
    d = _si_mismatch(policy, start_run, fake_clock, insurer_si=300_000_00)
    client = make_key(partner=policy.employer.partner, all_employers=True)

    response = client.post(f"/api/v1/discrepancies/{d.pk}/resolve", {"action": "resend", "note": "Keel is right"})
    listed = client.get(f"/api/v1/reconciliations/{d.run_id}/discrepancies")

    assert response.status_code == 200, response.content
    shown = response.json()["resolution_result"]
    money = (shown["premium_amount"], shown["sum_insured"], shown["premium_direction"])
    assert money == ("749.59", "500000.00", "debit")
    assert listed.json()["results"][0]["resolution_result"] == shown
    d.refresh_from_db()  # stored in paise for the consumer
    assert (d.resolution_result["premium_amount"], d.resolution_result["sum_insured"]) == (PREMIUM, 500_000_00)
