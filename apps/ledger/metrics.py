"""Ledger metrics (issue 14).

- `keel_ledger_transactions_total{kind}` (topup, capture, refund, …) and `keel_ledger_holds_placed_total`:
  counted when their transaction commits, in the process that wrote them.
- `keel_ledger_low_balance_accounts`, `keel_ledger_held_paise`: scrape-time state of the employer accounts.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from apps.common.metrics import inc_on_commit

TRANSACTIONS = Counter("keel_ledger_transactions", "Ledger transactions committed, by kind", ["kind"])
HOLDS_PLACED = Counter("keel_ledger_holds_placed", "Holds placed on employer accounts")


def transactions_committed(kinds: list[str]) -> None:
    """Count `kinds` (one per transaction) once the surrounding transaction commits."""

    def count() -> None:
        for kind in kinds:
            TRANSACTIONS.labels(kind).inc()

    inc_on_commit(count)


def holds_placed(n: int) -> None:
    inc_on_commit(lambda: HOLDS_PLACED.inc(n))


class LedgerCollector(Collector):
    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily("keel_ledger_low_balance_accounts", "Employer accounts below their threshold")
        yield GaugeMetricFamily("keel_ledger_held_paise", "Paise held on employer accounts, in total")

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.db.models import Count, Q, Sum

        from apps.ledger.models import AccountKind, LedgerAccount

        try:
            figures = LedgerAccount.objects.filter(kind=AccountKind.EMPLOYER).aggregate(
                low=Count("id", filter=Q(low_balance=True)), held=Sum("held")
            )
        except Exception:
            return
        yield GaugeMetricFamily(
            "keel_ledger_low_balance_accounts", "Employer accounts below their threshold", value=figures["low"]
        )
        yield GaugeMetricFamily(
            "keel_ledger_held_paise", "Paise held on employer accounts, in total", value=figures["held"] or 0
        )


def register_collector() -> None:
    from apps.common.metrics import register_scrape_collector

    register_scrape_collector("ledger", LedgerCollector())
