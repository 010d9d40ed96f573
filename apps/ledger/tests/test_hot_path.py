"""The ledger's write paths: a capture round is one data-modifying statement on PostgreSQL and the ORM steps
elsewhere — the same rows, results, replays and refusals either way; single operations are a bulk of one
(ADR 0036)."""

from __future__ import annotations

import pytest
from django.db import connection
from django.forms.models import model_to_dict

from apps.audit.models import AuditEvent
from apps.employers.models import Employer
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
from apps.ledger.selectors import balance_get, ledger_verify
from apps.ledger.services import LedgerTopic, accounts, captures, holds, releases
from apps.ledger.tests.factories import SYSTEM, funded_employer
from apps.outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db


@pytest.fixture(params=["sql", "orm"])
def write_path(request, monkeypatch):
    """Run a test through the PostgreSQL statements ("sql", skipped elsewhere) and through the ORM fallback that
    SQLite uses ("orm", on whatever database the suite runs on)."""
    if request.param == "sql":
        if connection.vendor != "postgresql":
            pytest.skip("the single-statement capture round is PostgreSQL's")
    else:
        monkeypatch.setattr(captures, "_is_postgres", lambda: False)
    return request.param


def stored(instance):
    """The row as the database has it now, as a dict (compared with what a service returned)."""
    return model_to_dict(type(instance).objects.get(pk=instance.pk)) | {"pk": instance.pk}


def returned(instance):
    return model_to_dict(instance) | {"pk": instance.pk}


def employer_entries(employer_id: int) -> list[tuple[str, int, int | None]]:
    return list(
        LedgerEntry.objects.filter(account__employer_id=employer_id)
        .order_by("id")
        .values_list("direction", "amount", "balance_after")
    )


# --- what the operations write and return ---------------------------------------------------------------------


def test_place_capture_release_write_the_rows_they_return(write_path):
    employer = funded_employer(1000_00)

    placed = services.hold_place(employer_id=employer.pk, amount=300_00, reference="h1", endorsement_id=7, actor=SYSTEM)
    services.hold_place(employer_id=employer.pk, amount=200_00, reference="h2", actor=SYSTEM)
    txn = services.hold_capture(reference="h1", actor=SYSTEM)
    resolution = services.hold_release(reference="h2", actor=SYSTEM, reason="insurer rejected")

    assert (placed.placed, placed.available_after) == (True, 700_00)
    assert returned(placed.hold) == stored(placed.hold)
    assert placed.hold.created_at == Hold.objects.get(pk=placed.hold.pk).created_at
    assert not placed.hold._state.adding
    assert returned(txn) == stored(txn)
    assert txn.created_at == LedgerTransaction.objects.get(pk=txn.pk).created_at
    assert (txn.kind, txn.reference, txn.amount, txn.endorsement_id) == (TransactionKind.CAPTURE, "h1", 300_00, 7)
    assert returned(resolution) == stored(resolution)
    assert (resolution.kind, resolution.reason, resolution.transaction_id) == (
        ResolutionKind.RELEASED,
        "insurer rejected",
        None,
    )
    capture = HoldResolution.objects.get(hold=placed.hold)
    assert (capture.kind, capture.transaction_id) == (ResolutionKind.CAPTURED, txn.pk)
    # The employer side of the capture carries the running balance; the payable side carries none.
    assert list(txn.entries.order_by("id").values_list("account__kind", "direction", "amount", "balance_after")) == [
        (AccountKind.EMPLOYER, Direction.DEBIT, 300_00, 700_00),
        (AccountKind.INSURER_PAYABLE, Direction.CREDIT, 300_00, None),
    ]
    assert balance_get(employer_id=employer.pk).posted == 700_00
    assert balance_get(employer_id=employer.pk).held == 0
    account_id = str(placed.hold.account_id)
    assert list(
        AuditEvent.objects.filter(action__startswith="ledger.holds_")
        .order_by("id")
        .values_list("action", "object_id", "after__references")
    ) == [
        ("ledger.holds_placed", account_id, ["h1"]),
        ("ledger.holds_placed", account_id, ["h2"]),
        ("ledger.holds_captured", account_id, ["h1"]),
        ("ledger.holds_released", account_id, ["h2"]),
    ]
    report = ledger_verify()
    assert report.ok, report.problems


def test_replays_and_refusals_are_the_same_on_both_paths(write_path):
    employer = funded_employer(500_00)
    services.hold_place(employer_id=employer.pk, amount=300_00, reference="h1", actor=SYSTEM)
    services.hold_place(employer_id=employer.pk, amount=100_00, reference="h2", actor=SYSTEM)
    first_capture = services.hold_capture(reference="h1", actor=SYSTEM)
    first_release = services.hold_release(reference="h2", actor=SYSTEM)
    rows = (
        Hold.objects.count(),
        HoldResolution.objects.count(),
        LedgerEntry.objects.count(),
        AuditEvent.objects.count(),
    )

    again = services.hold_place(employer_id=employer.pk, amount=300_00, reference="h1", actor=SYSTEM)
    refused = services.hold_place(employer_id=employer.pk, amount=500_00, reference="h3", actor=SYSTEM)
    with pytest.raises(services.ReferenceConflict):
        services.hold_place(employer_id=employer.pk, amount=1, reference="h1", actor=SYSTEM)
    assert services.hold_capture(reference="h1", actor=SYSTEM).pk == first_capture.pk
    assert services.hold_release(reference="h2", actor=SYSTEM).pk == first_release.pk
    with pytest.raises(services.HoldAlreadyCaptured):
        services.hold_release(reference="h1", actor=SYSTEM)
    with pytest.raises(services.HoldAlreadyReleased):
        services.hold_capture(reference="h2", actor=SYSTEM)
    with pytest.raises(services.HoldNotFound):
        services.hold_capture(reference="nope", actor=SYSTEM)

    assert (again.placed, again.hold.pk, again.available_after) == (True, Hold.objects.get(reference="h1").pk, 200_00)
    assert (refused.placed, refused.hold, refused.available_after) == (False, None, 200_00)
    assert rows == (
        Hold.objects.count(),
        HoldResolution.objects.count(),
        LedgerEntry.objects.count(),
        AuditEvent.objects.count(),
    )
    assert ledger_verify().ok


def test_capture_that_loses_a_race_after_its_read_answers_as_a_replay_and_writes_nothing(write_path, monkeypatch):
    """The read saw the hold open, but by the time the write ran another worker had captured it: the unique
    constraints refuse the second capture inside the statement, everything rolls back, the winner's
    transaction is returned."""
    employer = funded_employer(500_00)
    services.hold_place(employer_id=employer.pk, amount=100_00, reference="h1", actor=SYSTEM)
    stale = holds._hold_rows(["h1"])
    winner = services.hold_capture(reference="h1", actor=SYSTEM)
    before = (balance_get(employer_id=employer.pk), LedgerEntry.objects.count(), AuditEvent.objects.count())
    reads = iter([stale])
    real_read = holds._hold_rows
    monkeypatch.setattr(captures, "_hold_rows", lambda references: next(reads, None) or real_read(references))

    loser = services.hold_capture(reference="h1", actor=SYSTEM)

    assert loser.pk == winner.pk
    assert (balance_get(employer_id=employer.pk), LedgerEntry.objects.count(), AuditEvent.objects.count()) == before


def test_release_that_loses_to_a_capture_after_its_read_is_refused_and_writes_nothing(write_path, monkeypatch):
    employer = funded_employer(500_00)
    services.hold_place(employer_id=employer.pk, amount=100_00, reference="h1", actor=SYSTEM)
    stale = holds._hold_rows(["h1"])
    services.hold_capture(reference="h1", actor=SYSTEM)
    before = (balance_get(employer_id=employer.pk), OutboxMessage.objects.count(), AuditEvent.objects.count())
    reads = iter([stale])
    real_read = holds._hold_rows
    monkeypatch.setattr(releases, "_hold_rows", lambda references: next(reads, None) or real_read(references))

    with pytest.raises(services.HoldAlreadyCaptured):
        services.hold_release(reference="h1", actor=SYSTEM)

    assert (balance_get(employer_id=employer.pk), OutboxMessage.objects.count(), AuditEvent.objects.count()) == before


def test_balance_after_is_the_running_balance_across_single_and_bulk_operations(write_path):
    employer = funded_employer(1000_00)
    services.hold_place(employer_id=employer.pk, amount=100_00, reference="a", actor=SYSTEM)
    services.holds_place_bulk(
        employer_id=employer.pk,
        requests=[services.HoldRequest("b", 50_00), services.HoldRequest("c", 25_00)],
        actor=SYSTEM,
    )
    services.hold_capture(reference="a", actor=SYSTEM)
    services.holds_capture_bulk(references=["b", "c"], actor=SYSTEM)
    services.refund_post(employer_id=employer.pk, amount=10_00, reference="r", actor=SYSTEM)

    assert employer_entries(employer.pk) == [
        (Direction.CREDIT, 1000_00, 1000_00),
        (Direction.DEBIT, 100_00, 900_00),
        (Direction.DEBIT, 50_00, 850_00),
        (Direction.DEBIT, 25_00, 825_00),
        (Direction.CREDIT, 10_00, 835_00),
    ]
    assert ledger_verify().ok


def test_bulk_capture_round_writes_the_rows_it_returns(write_path):
    employer = funded_employer(1000_00)
    references = ["plain", "with,comma", 'with"quote', "{braces}", "back\\slash", "it's"]
    requests = [services.HoldRequest(r, (i + 1) * 10_00, i if i % 2 else None) for i, r in enumerate(references)]
    services.holds_place_bulk(employer_id=employer.pk, requests=requests, actor=SYSTEM)

    captured = services.holds_capture_bulk(references=references, actor=SYSTEM)

    assert list(captured) == references
    for request in requests:
        txn = captured[request.reference]
        assert returned(txn) == stored(txn)
        assert (txn.kind, txn.amount, txn.endorsement_id) == (
            TransactionKind.CAPTURE,
            request.amount,
            request.endorsement_id,
        )
        assert HoldResolution.objects.get(hold__reference=request.reference).transaction_id == txn.pk
    running = 1000_00
    expected = [(Direction.CREDIT, 1000_00, 1000_00)]
    for request in requests:
        running -= request.amount
        expected.append((Direction.DEBIT, request.amount, running))
    assert employer_entries(employer.pk) == expected
    assert balance_get(employer_id=employer.pk).posted == 1000_00 - 210_00
    assert ledger_verify().ok


def test_capture_flips_low_balance_when_the_threshold_was_raised_since_the_last_change(write_path, outbox_topics):
    employer = funded_employer(1000_00, low_balance_threshold=100_00)
    services.hold_place(employer_id=employer.pk, amount=300_00, reference="h1", actor=SYSTEM)  # 700: above
    Employer.objects.filter(pk=employer.pk).update(low_balance_threshold=800_00)  # an operator raises it

    services.hold_capture(reference="h1", actor=SYSTEM)  # available stays 700, now below 800

    assert balance_get(employer_id=employer.pk).low_balance is True
    assert outbox_topics(LedgerTopic.LOW_BALANCE) == [LedgerTopic.LOW_BALANCE]
    assert OutboxMessage.objects.get(topic=LedgerTopic.LOW_BALANCE).payload == {
        "employer_id": employer.pk,
        "available": 700_00,
        "threshold": 800_00,
    }


# --- statement order (PostgreSQL) ------------------------------------------------------------------------------


def test_the_account_update_comes_first_in_the_capture_statement():
    """The lock order of ADR 0008: the employer's account row is the first row the statement writes, so its lock
    is taken before any unique key of the transaction or resolution (a waiter never holds one of those)."""
    sql = captures._HOLDS_CAPTURE_SQL
    assert sql.index("UPDATE ") < sql.index("INSERT INTO"), sql


def test_verify_reports_an_employer_entry_whose_balance_after_is_not_the_running_balance():
    employer = funded_employer(1000_00)
    account = LedgerAccount.objects.get(employer=employer)
    payable_id = accounts._system_account_id(AccountKind.INSURER_PAYABLE)
    txn = LedgerTransaction.objects.create(
        kind=TransactionKind.REFUND, reference="forged", employer=employer, amount=5_00
    )
    LedgerEntry.objects.create(
        transaction=txn, account=account, direction=Direction.CREDIT, amount=5_00, balance_after=1000_00
    )
    LedgerEntry.objects.create(transaction=txn, account_id=payable_id, direction=Direction.DEBIT, amount=5_00)
    LedgerAccount.objects.filter(pk=account.pk).update(posted=1005_00)  # the cached balance agrees with the entries

    report = ledger_verify()

    assert report.problems == [
        f"entry {txn.entries.get(account=account).pk} (account {account.pk}): "
        f"balance_after 100000 != running balance 100500"
    ]
