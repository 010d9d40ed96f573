"""Ledger services (SPEC §6): postings, holds, resolutions, idempotency, low balance, runway, verification."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.employers.tests.factories import EmployerFactory
from apps.ledger import services
from apps.ledger.models import (
    AccountKind,
    Direction,
    Hold,
    HoldResolution,
    LedgerAccount,
    LedgerEntry,
    LedgerTransaction,
    ResolutionKind,
    TransactionKind,
)
from apps.ledger.selectors import balance_get, entries_for_employer, ledger_verify, system_account_balances
from apps.ledger.services import HoldRequest, LedgerTopic
from apps.ledger.tests.factories import SYSTEM, funded_employer
from apps.outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db


def snapshot(employer_id: int) -> tuple:
    """Everything a rejected operation must leave untouched."""
    account = LedgerAccount.objects.filter(employer_id=employer_id).values_list("posted", "held", "low_balance").first()
    return (
        account,
        LedgerTransaction.objects.count(),
        LedgerEntry.objects.count(),
        Hold.objects.count(),
        HoldResolution.objects.count(),
        OutboxMessage.objects.count(),
        AuditEvent.objects.count(),
    )


def balances(employer_id: int) -> tuple[int, int, int]:
    b = balance_get(employer_id=employer_id)
    return b.posted, b.held, b.available


# --- accounts ------------------------------------------------------------------------------------------------


def test_account_open_is_get_or_create():
    employer = EmployerFactory()

    first = services.ledger_account_open(employer_id=employer.pk)
    second = services.ledger_account_open(employer_id=employer.pk)

    assert first.pk == second.pk
    assert (first.kind, first.currency, first.posted, first.held) == (AccountKind.EMPLOYER, "INR", 0, 0)
    assert LedgerAccount.objects.filter(employer=employer).count() == 1


def test_account_open_for_unknown_employer_is_refused():
    with pytest.raises(services.UnknownEmployer):
        services.ledger_account_open(employer_id=987654)
    assert LedgerAccount.objects.count() == 0


def test_database_refuses_a_second_endorsement_account_for_one_employer():
    employer = EmployerFactory()
    services.ledger_account_open(employer_id=employer.pk)

    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerAccount.objects.create(kind=AccountKind.EMPLOYER, employer=employer)


def test_database_refuses_available_below_zero_on_an_employer_account():
    employer = funded_employer(100_00)

    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerAccount.objects.filter(employer=employer).update(held=100_01)

    assert balances(employer.pk) == (100_00, 0, 100_00)


# --- top-ups and refunds -------------------------------------------------------------------------------------


def test_topup_credits_employer_and_debits_clearing_with_balanced_entries(outbox_topics):
    employer = EmployerFactory()

    txn = services.topup_post(employer_id=employer.pk, amount=500_00, reference="bank-1", actor=SYSTEM)

    assert (txn.kind, txn.reference, txn.amount, txn.employer_id) == (
        TransactionKind.TOPUP,
        "bank-1",
        500_00,
        employer.pk,
    )
    entries = {(e.account.kind, e.direction, e.amount, e.balance_after) for e in txn.entries.select_related("account")}
    assert entries == {
        (AccountKind.EMPLOYER, Direction.CREDIT, 500_00, 500_00),
        (AccountKind.TOPUP_CLEARING, Direction.DEBIT, 500_00, None),
    }
    assert balances(employer.pk) == (500_00, 0, 500_00)
    assert system_account_balances() == {AccountKind.TOPUP_CLEARING: -500_00}
    assert outbox_topics() == [LedgerTopic.FUNDS_AVAILABLE]
    message = OutboxMessage.objects.get()
    assert message.payload == {"employer_id": employer.pk, "available": 500_00}
    assert message.key == f"employer:{employer.pk}"
    assert AuditEvent.objects.filter(action="ledger.topup_posted", employer_id=employer.pk).count() == 1


def test_topup_repeated_with_same_reference_returns_original_and_changes_nothing():
    employer = EmployerFactory()
    first = services.topup_post(employer_id=employer.pk, amount=500_00, reference="bank-1", actor=SYSTEM)
    before = snapshot(employer.pk)

    again = services.topup_post(employer_id=employer.pk, amount=500_00, reference="bank-1", actor=SYSTEM)

    assert again.pk == first.pk
    assert snapshot(employer.pk) == before


def test_topup_reference_reused_with_other_amount_is_a_conflict_and_changes_nothing():
    employer = EmployerFactory()
    services.topup_post(employer_id=employer.pk, amount=500_00, reference="bank-1", actor=SYSTEM)
    before = snapshot(employer.pk)

    with pytest.raises(services.ReferenceConflict):
        services.topup_post(employer_id=employer.pk, amount=400_00, reference="bank-1", actor=SYSTEM)

    assert snapshot(employer.pk) == before


@pytest.mark.parametrize("amount", [0, -1, True, 1.5, "100"])
def test_non_positive_or_non_integer_amounts_are_refused_and_change_nothing(amount):
    employer = funded_employer(100_00)
    before = snapshot(employer.pk)

    with pytest.raises(services.InvalidLedgerRequest):
        services.topup_post(employer_id=employer.pk, amount=amount, reference="x", actor=SYSTEM)
    with pytest.raises(services.InvalidLedgerRequest):
        services.hold_place(employer_id=employer.pk, amount=amount, reference="h", actor=SYSTEM)
    with pytest.raises(services.InvalidLedgerRequest):
        services.refund_post(employer_id=employer.pk, amount=amount, reference="r", actor=SYSTEM)

    assert snapshot(employer.pk) == before


def test_refund_credits_employer_debits_insurer_payable_and_is_idempotent(outbox_topics):
    employer = EmployerFactory()

    first = services.refund_post(
        employer_id=employer.pk, amount=70_00, reference="del-1", endorsement_id=9, actor=SYSTEM
    )
    again = services.refund_post(
        employer_id=employer.pk, amount=70_00, reference="del-1", endorsement_id=9, actor=SYSTEM
    )

    assert again.pk == first.pk
    assert (first.kind, first.endorsement_id) == (TransactionKind.REFUND, 9)
    assert balances(employer.pk) == (70_00, 0, 70_00)
    assert system_account_balances() == {AccountKind.INSURER_PAYABLE: -70_00}
    assert outbox_topics() == [LedgerTopic.FUNDS_AVAILABLE]


# --- holds ---------------------------------------------------------------------------------------------------


def test_hold_that_fits_is_placed_and_reduces_available():
    employer = funded_employer(300_00)

    result = services.hold_place(employer_id=employer.pk, amount=120_00, reference="h1", endorsement_id=5, actor=SYSTEM)

    assert result.placed is True
    assert result.available_after == 180_00
    assert (result.hold.reference, result.hold.amount, result.hold.endorsement_id) == ("h1", 120_00, 5)
    assert balances(employer.pk) == (300_00, 120_00, 180_00)
    assert AuditEvent.objects.filter(action="ledger.holds_placed").count() == 1


def test_hold_that_does_not_fit_writes_nothing():
    employer = funded_employer(100_00)
    before = snapshot(employer.pk)

    result = services.hold_place(employer_id=employer.pk, amount=100_01, reference="h1", actor=SYSTEM)

    assert (result.placed, result.hold, result.available_after) == (False, None, 100_00)
    assert snapshot(employer.pk) == before


def test_hold_on_employer_without_account_is_not_placed_and_writes_nothing():
    employer = EmployerFactory()

    result = services.hold_place(employer_id=employer.pk, amount=1, reference="h1", actor=SYSTEM)

    assert (result.placed, result.available_after) == (False, 0)
    assert snapshot(employer.pk) == (None, 0, 0, 0, 0, 0, 0)


def test_hold_repeated_with_same_reference_returns_original_and_changes_nothing():
    employer = funded_employer(300_00)
    first = services.hold_place(employer_id=employer.pk, amount=100_00, reference="h1", actor=SYSTEM)
    before = snapshot(employer.pk)

    again = services.hold_place(employer_id=employer.pk, amount=100_00, reference="h1", actor=SYSTEM)

    assert (again.placed, again.hold.pk, again.available_after) == (True, first.hold.pk, 200_00)
    assert snapshot(employer.pk) == before
    with pytest.raises(services.ReferenceConflict):
        services.hold_place(employer_id=employer.pk, amount=50_00, reference="h1", actor=SYSTEM)
    assert snapshot(employer.pk) == before


def test_capture_moves_held_to_posted_debit_and_credits_insurer_payable():
    employer = funded_employer(300_00)
    services.hold_place(employer_id=employer.pk, amount=120_00, reference="h1", endorsement_id=5, actor=SYSTEM)

    txn = services.hold_capture(reference="h1", actor=SYSTEM)

    assert (txn.kind, txn.reference, txn.amount, txn.endorsement_id) == (TransactionKind.CAPTURE, "h1", 120_00, 5)
    assert balances(employer.pk) == (180_00, 0, 180_00)
    resolution = HoldResolution.objects.get()
    assert (resolution.kind, resolution.transaction_id) == (ResolutionKind.CAPTURED, txn.pk)
    employer_entry = txn.entries.get(account__kind=AccountKind.EMPLOYER)
    assert (employer_entry.direction, employer_entry.balance_after) == (Direction.DEBIT, 180_00)
    assert system_account_balances() == {AccountKind.TOPUP_CLEARING: -300_00, AccountKind.INSURER_PAYABLE: 120_00}


def test_capture_repeated_returns_the_same_transaction_and_changes_nothing():
    employer = funded_employer(300_00)
    services.hold_place(employer_id=employer.pk, amount=120_00, reference="h1", actor=SYSTEM)
    first = services.hold_capture(reference="h1", actor=SYSTEM)
    before = snapshot(employer.pk)

    again = services.hold_capture(reference="h1", actor=SYSTEM)

    assert again.pk == first.pk
    assert snapshot(employer.pk) == before


def test_release_returns_funds_wakes_parked_and_is_idempotent(outbox_topics):
    employer = funded_employer(300_00)
    services.hold_place(employer_id=employer.pk, amount=120_00, reference="h1", actor=SYSTEM)

    resolution = services.hold_release(reference="h1", actor=SYSTEM, reason="insurer rejected")
    before = snapshot(employer.pk)
    again = services.hold_release(reference="h1", actor=SYSTEM, reason="retry")

    assert again.pk == resolution.pk
    assert (resolution.kind, resolution.transaction_id, resolution.reason) == (
        ResolutionKind.RELEASED,
        None,
        "insurer rejected",
    )
    assert snapshot(employer.pk) == before
    assert balances(employer.pk) == (300_00, 0, 300_00)
    assert LedgerTransaction.objects.filter(kind=TransactionKind.CAPTURE).count() == 0
    assert outbox_topics(LedgerTopic.FUNDS_AVAILABLE) == [LedgerTopic.FUNDS_AVAILABLE] * 2
    assert OutboxMessage.objects.order_by("id").last().payload == {"employer_id": employer.pk, "available": 300_00}


def test_capture_after_release_and_release_after_capture_are_refused_and_change_nothing():
    employer = funded_employer(300_00)
    services.hold_place(employer_id=employer.pk, amount=100_00, reference="released", actor=SYSTEM)
    services.hold_place(employer_id=employer.pk, amount=100_00, reference="captured", actor=SYSTEM)
    services.hold_release(reference="released", actor=SYSTEM)
    services.hold_capture(reference="captured", actor=SYSTEM)
    before = snapshot(employer.pk)

    with pytest.raises(services.HoldAlreadyReleased):
        services.hold_capture(reference="released", actor=SYSTEM)
    with pytest.raises(services.HoldAlreadyCaptured):
        services.hold_release(reference="captured", actor=SYSTEM)

    assert snapshot(employer.pk) == before
    assert issubclass(services.HoldAlreadyReleased, services.HoldAlreadyResolved)


def test_resolving_an_unknown_hold_is_refused():
    with pytest.raises(services.HoldNotFound):
        services.hold_capture(reference="nope", actor=SYSTEM)
    with pytest.raises(services.HoldNotFound):
        services.hold_release(reference="nope", actor=SYSTEM)


def test_database_refuses_a_second_resolution_of_a_hold():
    employer = funded_employer(300_00)
    hold = services.hold_place(employer_id=employer.pk, amount=100_00, reference="h1", actor=SYSTEM).hold
    services.hold_release(reference="h1", actor=SYSTEM)

    with pytest.raises(IntegrityError), transaction.atomic():
        HoldResolution.objects.create(hold=hold, kind=ResolutionKind.RELEASED)


def test_bulk_capture_posts_each_hold_with_a_running_balance_in_one_lock_round(django_assert_num_queries):
    employer = funded_employer(1_100_00)
    services.hold_place(employer_id=employer.pk, amount=100_00, reference="c0", actor=SYSTEM)
    services.hold_capture(reference="c0", actor=SYSTEM)  # opens the insurer-payable account
    services.holds_place_bulk(
        employer_id=employer.pk,
        requests=[HoldRequest("c1", 100_00, 1), HoldRequest("c2", 250_00, 2), HoldRequest("c3", 50_00, 3)],
        actor=SYSTEM,
    )

    # holds with resolutions, payable account, SAVEPOINT, audit INSERT, then on PostgreSQL one statement (the
    # UPDATE and the transactions, entries and resolutions it implies), elsewhere UPDATE + 3 bulk INSERTs; RELEASE.
    with django_assert_num_queries(6 if connection.vendor == "postgresql" else 9):
        captured = services.holds_capture_bulk(references=["c1", "c2", "c3"], actor=SYSTEM)

    assert sorted(captured) == ["c1", "c2", "c3"]
    assert [(t.kind, t.amount, t.endorsement_id) for t in (captured["c1"], captured["c2"], captured["c3"])] == [
        (TransactionKind.CAPTURE, 100_00, 1),
        (TransactionKind.CAPTURE, 250_00, 2),
        (TransactionKind.CAPTURE, 50_00, 3),
    ]
    assert balances(employer.pk) == (600_00, 0, 600_00)
    employer_side = LedgerEntry.objects.filter(account__kind=AccountKind.EMPLOYER, direction=Direction.DEBIT)
    assert list(employer_side.order_by("id").values_list("amount", "balance_after")) == [
        (100_00, 1_000_00),
        (100_00, 900_00),
        (250_00, 650_00),
        (50_00, 600_00),
    ]
    assert set(HoldResolution.objects.values_list("kind", flat=True)) == {ResolutionKind.CAPTURED}
    # One audit row for the round (the warm-up capture of "c0" wrote its own, a bulk of one).
    rounds = AuditEvent.objects.filter(action="ledger.holds_captured").values_list("after__references", flat=True)
    assert list(rounds.order_by("id")) == [["c0"], ["c1", "c2", "c3"]]
    assert system_account_balances()[AccountKind.INSURER_PAYABLE] == 500_00
    assert ledger_verify().ok


def test_bulk_capture_repeated_or_overlapping_replays_what_was_captured_and_captures_the_rest():
    employer = funded_employer(1_000_00)
    for ref in ("a", "b"):
        services.hold_place(employer_id=employer.pk, amount=100_00, reference=ref, actor=SYSTEM)
    first = services.hold_capture(reference="a", actor=SYSTEM)

    captured = services.holds_capture_bulk(references=["a", "b", "a"], actor=SYSTEM)
    before = snapshot(employer.pk)
    again = services.holds_capture_bulk(references=["b", "a"], actor=SYSTEM)

    assert captured["a"].pk == first.pk
    assert again["b"].pk == captured["b"].pk
    assert snapshot(employer.pk) == before
    assert balances(employer.pk) == (800_00, 0, 800_00)
    assert LedgerTransaction.objects.filter(kind=TransactionKind.CAPTURE).count() == 2


def test_bulk_capture_with_a_released_or_unknown_hold_is_refused_and_changes_nothing():
    employer = funded_employer(1_000_00)
    for ref in ("ok", "gone"):
        services.hold_place(employer_id=employer.pk, amount=100_00, reference=ref, actor=SYSTEM)
    services.hold_release(reference="gone", actor=SYSTEM)
    before = snapshot(employer.pk)

    with pytest.raises(services.HoldAlreadyReleased):
        services.holds_capture_bulk(references=["ok", "gone"], actor=SYSTEM)
    with pytest.raises(services.HoldNotFound):
        services.holds_capture_bulk(references=["ok", "nope"], actor=SYSTEM)

    assert snapshot(employer.pk) == before


def test_bulk_capture_over_several_employers_locks_each_account_once():
    first, second = funded_employer(500_00), funded_employer(500_00)
    services.hold_place(employer_id=first.pk, amount=100_00, reference="f1", actor=SYSTEM)
    services.hold_place(employer_id=second.pk, amount=200_00, reference="s1", actor=SYSTEM)
    services.hold_place(employer_id=first.pk, amount=50_00, reference="f2", actor=SYSTEM)

    services.holds_capture_bulk(references=["f1", "s1", "f2"], actor=SYSTEM)

    assert balances(first.pk) == (350_00, 0, 350_00)
    assert balances(second.pk) == (300_00, 0, 300_00)
    assert AuditEvent.objects.filter(action="ledger.holds_captured").count() == 2
    assert ledger_verify().ok


def test_bulk_release_frees_each_hold_with_its_reason_in_one_round_and_wakes_parked_once(outbox_topics):
    employer = funded_employer(1_000_00)
    for ref in ("r1", "r2", "r3"):
        services.hold_place(employer_id=employer.pk, amount=100_00, reference=ref, actor=SYSTEM)
    wakes_before = len(outbox_topics(LedgerTopic.FUNDS_AVAILABLE))

    released = services.holds_release_bulk(reasons={"r1": "age limit", "r3": "duplicate"}, actor=SYSTEM)

    assert {ref: (r.kind, r.reason) for ref, r in released.items()} == {
        "r1": (ResolutionKind.RELEASED, "age limit"),
        "r3": (ResolutionKind.RELEASED, "duplicate"),
    }
    assert balances(employer.pk) == (1_000_00, 100_00, 900_00)
    assert AuditEvent.objects.filter(action="ledger.holds_released").count() == 1
    assert len(outbox_topics(LedgerTopic.FUNDS_AVAILABLE)) == wakes_before + 1
    assert LedgerTransaction.objects.filter(kind=TransactionKind.CAPTURE).count() == 0
    assert ledger_verify().ok


def test_bulk_release_replays_released_holds_and_refuses_captured_ones_changing_nothing():
    employer = funded_employer(1_000_00)
    for ref in ("a", "b", "c"):
        services.hold_place(employer_id=employer.pk, amount=100_00, reference=ref, actor=SYSTEM)
    first = services.holds_release_bulk(reasons={"a": "x"}, actor=SYSTEM)
    services.hold_capture(reference="c", actor=SYSTEM)
    before = snapshot(employer.pk)

    again = services.holds_release_bulk(reasons={"a": "other reason"}, actor=SYSTEM)
    with pytest.raises(services.HoldAlreadyCaptured):
        services.holds_release_bulk(reasons={"b": "x", "c": "x"}, actor=SYSTEM)
    with pytest.raises(services.HoldNotFound):
        services.holds_release_bulk(reasons={"b": "x", "nope": "x"}, actor=SYSTEM)

    assert again["a"].pk == first["a"].pk
    assert again["a"].reason == "x"
    assert snapshot(employer.pk) == before


def test_bulk_refunds_credit_each_with_a_running_balance_in_one_round_per_employer(outbox_topics):
    first, second = funded_employer(100_00), funded_employer(50_00)
    requests = [
        services.RefundRequest(first.pk, 10_00, "ref-1", 1),
        services.RefundRequest(second.pk, 5_00, "ref-2", 2),
        services.RefundRequest(first.pk, 20_00, "ref-3", 3),
    ]
    wakes_before = len(outbox_topics(LedgerTopic.FUNDS_AVAILABLE))

    posted = services.refunds_post_bulk(requests=requests, actor=SYSTEM)

    assert {ref: (t.kind, t.amount, t.endorsement_id) for ref, t in posted.items()} == {
        "ref-1": (TransactionKind.REFUND, 10_00, 1),
        "ref-2": (TransactionKind.REFUND, 5_00, 2),
        "ref-3": (TransactionKind.REFUND, 20_00, 3),
    }
    assert balances(first.pk) == (130_00, 0, 130_00)
    assert balances(second.pk) == (55_00, 0, 55_00)
    credits = LedgerEntry.objects.filter(
        account__employer=first, direction=Direction.CREDIT, transaction__kind="refund"
    )
    assert list(credits.order_by("id").values_list("amount", "balance_after")) == [(10_00, 110_00), (20_00, 130_00)]
    assert AuditEvent.objects.filter(action="ledger.refunds_posted").count() == 2
    assert len(outbox_topics(LedgerTopic.FUNDS_AVAILABLE)) == wakes_before + 2  # one per employer
    assert system_account_balances()[AccountKind.INSURER_PAYABLE] == -35_00
    assert ledger_verify().ok


def test_bulk_refunds_repeated_are_replays_and_other_terms_are_conflicts_changing_nothing():
    employer = funded_employer(100_00)
    original = services.refunds_post_bulk(
        requests=[services.RefundRequest(employer.pk, 10_00, "ref-1", 1)], actor=SYSTEM
    )
    before = snapshot(employer.pk)

    again = services.refunds_post_bulk(requests=[services.RefundRequest(employer.pk, 10_00, "ref-1", 1)], actor=SYSTEM)
    with pytest.raises(services.ReferenceConflict):
        services.refunds_post_bulk(
            requests=[
                services.RefundRequest(employer.pk, 99_00, "ref-1", 1),
                services.RefundRequest(employer.pk, 1, "n"),
            ],
            actor=SYSTEM,
        )
    with pytest.raises(services.ReferenceConflict):
        services.refunds_post_bulk(
            requests=[services.RefundRequest(employer.pk, 1, "dup"), services.RefundRequest(employer.pk, 2, "dup")],
            actor=SYSTEM,
        )

    assert again["ref-1"].pk == original["ref-1"].pk
    assert snapshot(employer.pk) == before


# --- bulk holds ----------------------------------------------------------------------------------------------


def test_bulk_holds_are_first_fit_in_fifo_order():
    employer = funded_employer(350)
    requests = [HoldRequest("big", 500, 1), HoldRequest("small", 100, 2), HoldRequest("medium", 200, 3)]

    results = services.holds_place_bulk(employer_id=employer.pk, requests=requests, actor=SYSTEM)

    assert [r.placed for r in results] == [False, True, True]
    assert [r.available_after for r in results] == [350, 250, 50]
    assert results[0].hold is None
    assert [(r.hold.reference, r.hold.amount, r.hold.endorsement_id) for r in results[1:]] == [
        ("small", 100, 2),
        ("medium", 200, 3),
    ]
    assert balances(employer.pk) == (350, 300, 50)
    assert AuditEvent.objects.filter(action="ledger.holds_placed").count() == 1


def test_bulk_holds_take_one_lock_round(django_assert_num_queries):
    employer = funded_employer(10_000)
    requests = [HoldRequest(f"b{i}", 100) for i in range(50)]

    # SAVEPOINT, SELECT … FOR UPDATE, existing holds, UPDATE, bulk INSERT, audit INSERT, RELEASE SAVEPOINT.
    with django_assert_num_queries(7):
        results = services.holds_place_bulk(employer_id=employer.pk, requests=requests, actor=SYSTEM)

    assert all(r.placed for r in results)


def test_bulk_holds_repeated_are_replays_and_change_nothing():
    employer = funded_employer(350)
    requests = [HoldRequest("a", 100), HoldRequest("b", 200), HoldRequest("c", 500)]
    first = services.holds_place_bulk(employer_id=employer.pk, requests=requests, actor=SYSTEM)
    before = snapshot(employer.pk)

    again = services.holds_place_bulk(employer_id=employer.pk, requests=requests[:2], actor=SYSTEM)

    assert [r.placed for r in first] == [True, True, False]
    assert [(r.placed, r.hold.pk) for r in again] == [(True, first[0].hold.pk), (True, first[1].hold.pk)]
    assert snapshot(employer.pk) == before


def test_bulk_holds_wake_parked_after_topup_first_fit():
    employer = funded_employer(0)
    parked = [HoldRequest("p1", 400), HoldRequest("p2", 150), HoldRequest("p3", 100)]
    assert [r.placed for r in services.holds_place_bulk(employer_id=employer.pk, requests=parked, actor=SYSTEM)] == [
        False,
        False,
        False,
    ]

    services.topup_post(employer_id=employer.pk, amount=300, reference="t", actor=SYSTEM)
    woken = services.holds_place_bulk(employer_id=employer.pk, requests=parked, actor=SYSTEM)

    assert [r.placed for r in woken] == [False, True, True]
    assert balances(employer.pk) == (300, 250, 50)


def test_bulk_hold_with_a_malformed_request_writes_nothing():
    employer = funded_employer(1000)
    before = snapshot(employer.pk)

    with pytest.raises(services.InvalidLedgerRequest):
        services.holds_place_bulk(
            employer_id=employer.pk, requests=[HoldRequest("ok", 100), HoldRequest("bad", 0)], actor=SYSTEM
        )

    assert snapshot(employer.pk) == before


# --- low balance ---------------------------------------------------------------------------------------------


def test_low_balance_fires_once_per_downward_crossing_and_clears_on_the_way_up(outbox_topics):
    employer = funded_employer(1000_00, low_balance_threshold=500_00)

    services.hold_place(employer_id=employer.pk, amount=400_00, reference="h1", actor=SYSTEM)  # 600: above
    assert outbox_topics(LedgerTopic.LOW_BALANCE) == []
    services.hold_place(employer_id=employer.pk, amount=200_00, reference="h2", actor=SYSTEM)  # 400: crosses
    services.hold_place(employer_id=employer.pk, amount=100_00, reference="h3", actor=SYSTEM)  # 300: still low
    services.hold_capture(reference="h1", actor=SYSTEM)  # available unchanged
    assert outbox_topics(LedgerTopic.LOW_BALANCE) == [LedgerTopic.LOW_BALANCE]
    assert balance_get(employer_id=employer.pk).low_balance is True
    first = OutboxMessage.objects.get(topic=LedgerTopic.LOW_BALANCE)
    assert first.payload == {"employer_id": employer.pk, "available": 400_00, "threshold": 500_00}
    assert first.key == f"employer:{employer.pk}"

    services.topup_post(employer_id=employer.pk, amount=300_00, reference="t2", actor=SYSTEM)  # 600: clears
    assert balance_get(employer_id=employer.pk).low_balance is False
    assert outbox_topics(LedgerTopic.LOW_BALANCE) == [LedgerTopic.LOW_BALANCE]

    services.hold_place(employer_id=employer.pk, amount=200_00, reference="h4", actor=SYSTEM)  # 400: crosses again
    assert outbox_topics(LedgerTopic.LOW_BALANCE) == [LedgerTopic.LOW_BALANCE] * 2


def test_zero_threshold_never_reports_low_balance(outbox_topics):
    employer = funded_employer(100_00)

    services.hold_place(employer_id=employer.pk, amount=100_00, reference="h1", actor=SYSTEM)

    assert balance_get(employer_id=employer.pk).low_balance is False
    assert outbox_topics(LedgerTopic.LOW_BALANCE) == []


# --- balance and runway --------------------------------------------------------------------------------------


def test_balance_of_employer_without_account_is_zero_and_runway_null():
    employer = EmployerFactory(low_balance_threshold=100_00)

    balance = balance_get(employer_id=employer.pk)

    assert (balance.posted, balance.held, balance.available, balance.low_balance) == (0, 0, 0, False)
    assert (balance.currency, balance.low_balance_threshold, balance.runway_days) == ("INR", 100_00, None)


def test_runway_is_null_without_debit_history():
    employer = funded_employer(1000_00)
    services.hold_place(employer_id=employer.pk, amount=100_00, reference="h1", actor=SYSTEM)

    assert balance_get(employer_id=employer.pk).runway_days is None


def test_runway_is_available_over_average_daily_net_debit_of_the_last_30_days():
    employer = funded_employer(10_000_00)
    with time_machine.travel(timezone.now() - timedelta(days=45), tick=False):
        services.hold_place(employer_id=employer.pk, amount=3_000_00, reference="old", actor=SYSTEM)
        services.hold_capture(reference="old", actor=SYSTEM)  # outside the window: ignored
    with time_machine.travel(timezone.now() - timedelta(days=10), tick=False):
        services.hold_place(employer_id=employer.pk, amount=1_000_00, reference="h1", actor=SYSTEM)
        services.hold_capture(reference="h1", actor=SYSTEM)
    services.hold_place(employer_id=employer.pk, amount=800_00, reference="h2", actor=SYSTEM)
    services.hold_capture(reference="h2", actor=SYSTEM)
    services.refund_post(employer_id=employer.pk, amount=300_00, reference="r1", actor=SYSTEM)
    services.hold_place(employer_id=employer.pk, amount=500_00, reference="open", actor=SYSTEM)  # held, no debit

    balance = balance_get(employer_id=employer.pk)

    # posted 10,000 − 3,000 − 1,000 − 800 + 300 = 5,500; available 5,000;
    # net debit in 30 days = 1,000 + 800 − 300 = 1,500 → 50/day → 100 days.
    assert (balance.posted, balance.held, balance.available) == (5_500_00, 500_00, 5_000_00)
    assert balance.runway_days == Decimal("100.0")


def test_runway_is_null_when_refunds_outweigh_debits():
    employer = funded_employer(1000_00)
    services.hold_place(employer_id=employer.pk, amount=100_00, reference="h1", actor=SYSTEM)
    services.hold_capture(reference="h1", actor=SYSTEM)
    services.refund_post(employer_id=employer.pk, amount=100_00, reference="r1", actor=SYSTEM)

    assert balance_get(employer_id=employer.pk).runway_days is None


def test_balance_is_one_query(django_assert_num_queries):
    employer = funded_employer(1000_00)

    with django_assert_num_queries(1):
        balance_get(employer_id=employer.pk)


def test_entries_listing_is_the_employers_side_newest_first_and_filters_by_time():
    employer = EmployerFactory()
    with time_machine.travel(timezone.now() - timedelta(days=2), tick=False):
        services.topup_post(employer_id=employer.pk, amount=100_00, reference="t1", actor=SYSTEM)
    services.topup_post(employer_id=employer.pk, amount=50_00, reference="t2", actor=SYSTEM)
    other = funded_employer(1)

    entries = list(entries_for_employer(employer_id=employer.pk))
    recent = list(entries_for_employer(employer_id=employer.pk, since=timezone.now() - timedelta(days=1)))

    assert [(e.transaction.reference, e.balance_after) for e in entries] == [("t2", 150_00), ("t1", 100_00)]
    assert [e.transaction.reference for e in recent] == ["t2"]
    assert all(e.account.employer_id == employer.pk for e in entries)
    assert other.pk != employer.pk


# --- immutability and verification ---------------------------------------------------------------------------


@pytest.mark.postgres
def test_entries_transactions_and_resolutions_cannot_be_updated_or_deleted(require_postgres):
    employer = funded_employer(100_00)
    services.hold_place(employer_id=employer.pk, amount=10_00, reference="h1", actor=SYSTEM)
    services.hold_capture(reference="h1", actor=SYSTEM)

    for model, column in [
        (LedgerEntry, "amount"),
        (LedgerTransaction, "amount"),
        (Hold, "amount"),
        (HoldResolution, "reason"),
    ]:
        table = model._meta.db_table
        for sql in (f"UPDATE {table} SET {column} = {column}", f"DELETE FROM {table}"):
            with pytest.raises(Exception, match="immutable"), transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql)
    assert ledger_verify().ok


def test_verify_is_clean_after_a_mix_of_operations(capsys):
    employer = funded_employer(1000_00)
    services.hold_place(employer_id=employer.pk, amount=100_00, reference="h1", actor=SYSTEM)
    services.hold_place(employer_id=employer.pk, amount=200_00, reference="h2", actor=SYSTEM)
    services.hold_capture(reference="h1", actor=SYSTEM)
    services.hold_release(reference="h2", actor=SYSTEM)
    services.refund_post(employer_id=employer.pk, amount=50_00, reference="r", actor=SYSTEM)

    report = ledger_verify()
    call_command("ledger_verify")

    assert report.ok, report.problems
    assert (report.accounts, report.transactions, report.holds) == (3, 3, 2)
    assert report.system_balances == {"topup_clearing": -1000_00, "insurer_payable": 50_00}
    assert "ledger OK" in capsys.readouterr().out


def test_verify_exits_non_zero_when_a_cached_balance_is_tampered_with(capsys):
    employer = funded_employer(1000_00)
    services.hold_place(employer_id=employer.pk, amount=100_00, reference="h1", actor=SYSTEM)
    LedgerAccount.objects.filter(employer=employer).update(posted=2000_00)

    with pytest.raises(CommandError, match="1 problem"):
        call_command("ledger_verify")

    out = capsys.readouterr().out
    assert "cached posted 200000 != entries 100000" in out


def test_verify_reports_tampered_held_and_an_unbalanced_transaction():
    employer = funded_employer(1000_00)
    LedgerAccount.objects.filter(employer=employer).update(held=5)
    if connection.vendor != "postgresql":  # the trigger forbids this on PostgreSQL; SQLite lets us simulate it
        LedgerEntry.objects.filter(direction=Direction.DEBIT).delete()

    report = ledger_verify()

    assert not report.ok
    assert any("cached held 5 != unresolved holds 0" in p for p in report.problems)
