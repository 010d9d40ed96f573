"""Real threads with their own PostgreSQL connections hammering the ledger (SPEC §6 concurrency)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection

from apps.employers.tests.factories import EmployerFactory
from apps.ledger import services
from apps.ledger.models import Hold, HoldResolution, LedgerTransaction, TransactionKind
from apps.ledger.selectors import balance_get, ledger_verify
from apps.ledger.tests.factories import SYSTEM, funded_employer

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres, pytest.mark.slow]


def run_threads(n: int, target: Callable[[int], Any], *, timeout: float = 60) -> list[Any]:
    """Run `target(i)` in `n` threads released together; returns results (or exceptions) in thread order."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def worker(i: int) -> None:
        try:
            barrier.wait()
            results[i] = target(i)
        except Exception as exc:
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not any(t.is_alive() for t in threads), "a worker hung (deadlock?)"
    return results


def test_hold_never_overdraws_under_concurrency(require_postgres):
    employer = funded_employer(300_00)
    work: queue.Queue[int] = queue.Queue()
    for i in range(500):
        work.put(i)

    def place(_: int) -> tuple[int, int]:
        placed = refused = 0
        while True:
            try:
                i = work.get_nowait()
            except queue.Empty:
                return placed, refused
            result = services.hold_place(employer_id=employer.pk, amount=1_00, reference=f"c-{i}", actor=SYSTEM)
            placed, refused = (placed + 1, refused) if result.placed else (placed, refused + 1)

    results = run_threads(8, place)

    assert not [r for r in results if isinstance(r, Exception)], results
    assert sum(r[0] for r in results) == 300
    assert sum(r[1] for r in results) == 200
    balance = balance_get(employer_id=employer.pk)
    assert (balance.posted, balance.held, balance.available) == (300_00, 300_00, 0)
    assert Hold.objects.count() == 300
    report = ledger_verify()
    assert report.ok, report.problems


def test_concurrent_capture_and_release_of_one_hold_exactly_one_wins(require_postgres):
    for round_ in range(5):
        employer = funded_employer(100_00)
        services.hold_place(employer_id=employer.pk, amount=40_00, reference=f"race-{round_}", actor=SYSTEM)

        def resolve(i: int, reference: str = f"race-{round_}") -> Any:
            if i % 2 == 0:
                return services.hold_capture(reference=reference, actor=SYSTEM)
            return services.hold_release(reference=reference, actor=SYSTEM)

        results = run_threads(4, resolve)

        resolution = HoldResolution.objects.get(hold__reference=f"race-{round_}")
        if resolution.kind == "captured":
            expected_errors, winners = services.HoldAlreadyCaptured, (0, 2)
            assert (
                LedgerTransaction.objects.filter(kind=TransactionKind.CAPTURE, reference=f"race-{round_}").count() == 1
            )
            expected_balance = (60_00, 0)
        else:
            expected_errors, winners = services.HoldAlreadyReleased, (1, 3)
            assert not LedgerTransaction.objects.filter(reference=f"race-{round_}").exists()
            expected_balance = (100_00, 0)
        losers = [r for i, r in enumerate(results) if i not in winners]
        assert all(isinstance(r, expected_errors) for r in losers), results
        assert all(not isinstance(r, Exception) for i, r in enumerate(results) if i in winners), results
        balance = balance_get(employer_id=employer.pk)
        assert (balance.posted, balance.held) == expected_balance
    report = ledger_verify()
    assert report.ok, report.problems


def test_double_capture_under_concurrency_captures_once(require_postgres):
    employer = funded_employer(100_00)
    services.hold_place(employer_id=employer.pk, amount=40_00, reference="twice", actor=SYSTEM)

    results = run_threads(6, lambda i: services.hold_capture(reference="twice", actor=SYSTEM))

    assert len({r.pk for r in results}) == 1, results
    assert LedgerTransaction.objects.filter(kind=TransactionKind.CAPTURE).count() == 1
    assert balance_get(employer_id=employer.pk).posted == 60_00
    assert ledger_verify().ok


def test_holds_on_two_employers_proceed_independently(require_postgres):
    """Employer B's holds complete while employer A's account row is locked by an open transaction."""
    from django.db import transaction

    employer_a = funded_employer(100_00)
    employer_b = funded_employer(100_00)
    a_locked = threading.Event()
    b_done = threading.Event()

    def hold_a_open() -> bool:
        with transaction.atomic():
            services.hold_place(employer_id=employer_a.pk, amount=10_00, reference="a-1", actor=SYSTEM)
            a_locked.set()
            # Keep A's row locked until B's holds are through (or give up after 10 s: the test then fails).
            return b_done.wait(10)

    def holds_b() -> int:
        assert a_locked.wait(10)
        placed = sum(
            services.hold_place(employer_id=employer_b.pk, amount=1_00, reference=f"b-{i}", actor=SYSTEM).placed
            for i in range(20)
        )
        b_done.set()
        return placed

    results = run_threads(2, lambda i: hold_a_open() if i == 0 else holds_b())

    assert results == [True, 20]
    assert balance_get(employer_id=employer_a.pk).held == 10_00
    assert balance_get(employer_id=employer_b.pk).held == 20_00
    assert ledger_verify().ok


def test_concurrent_first_use_opens_one_account(require_postgres):
    employer = EmployerFactory()

    results = run_threads(6, lambda i: services.ledger_account_open(employer_id=employer.pk).pk)

    assert len(set(results)) == 1, results


def test_concurrent_bulk_and_single_holds_never_overdraw(require_postgres):
    employer = funded_employer(1000)

    def work(i: int) -> int:
        if i % 2:
            reqs = [services.HoldRequest(f"bulk-{i}-{j}", 7) for j in range(40)]
            return sum(
                r.placed for r in services.holds_place_bulk(employer_id=employer.pk, requests=reqs, actor=SYSTEM)
            )
        return sum(
            services.hold_place(employer_id=employer.pk, amount=7, reference=f"one-{i}-{j}", actor=SYSTEM).placed
            for j in range(40)
        )

    results = run_threads(6, work)

    assert sum(results) == 1000 // 7
    balance = balance_get(employer_id=employer.pk)
    assert (balance.held, balance.available) == (7 * (1000 // 7), 1000 % 7)
    assert ledger_verify().ok


def test_concurrent_place_capture_and_release_on_one_employer_keep_balance_after_in_id_order(require_postgres):
    """The hot path on one employer from several threads: every entry's `balance_after` is the account's running
    balance in id order (entries are numbered under the row lock), and the cached balances match the rows."""
    employer = funded_employer(1_000_00)

    def work(i: int) -> int:
        captured = 0
        for j in range(25):
            reference = f"pair-{i}-{j}"
            services.hold_place(employer_id=employer.pk, amount=1_00 + i, reference=reference, actor=SYSTEM)
            if j % 5 == 4:
                services.hold_release(reference=reference, actor=SYSTEM)
            else:
                services.hold_capture(reference=reference, actor=SYSTEM)
                captured += 1_00 + i
        return captured

    results = run_threads(6, work)

    assert not [r for r in results if isinstance(r, Exception)], results
    balance = balance_get(employer_id=employer.pk)
    assert (balance.posted, balance.held) == (1_000_00 - sum(results), 0)
    assert LedgerTransaction.objects.filter(kind=TransactionKind.CAPTURE).count() == 6 * 20
    report = ledger_verify()
    assert report.ok, report.problems
