"""Ledger reads: balances (with low-balance state and runway), entries, and verification of the invariants."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.db import connection, transaction
from django.db.models import (
    Case,
    Count,
    F,
    IntegerField,
    Max,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    When,
    Window,
)
from django.db.models.functions import Coalesce
from django.utils import timezone

from apps.employers.selectors import employer_filter, employers_filter
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

RUNWAY_WINDOW_DAYS = 30
CURRENCY = "INR"


@dataclass(frozen=True, slots=True)
class Balance:
    employer_id: int
    currency: str
    posted: int
    held: int
    available: int
    low_balance: bool
    low_balance_threshold: int
    # available ÷ average daily net debit over the last 30 days, one decimal; None without net debits.
    runway_days: Decimal | None

    @property
    def threshold(self) -> int:
        return self.low_balance_threshold


class EmployerNotFound(LookupError):
    pass


def runway_days_from(*, available: int, net_debit: int) -> Decimal | None:
    """available ÷ (net debit over the window ÷ window days); None when the net debit is not positive."""
    if net_debit <= 0:
        return None
    daily = Decimal(net_debit) / RUNWAY_WINDOW_DAYS
    return (Decimal(max(available, 0)) / daily).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP)


_BALANCE_COLUMNS = ("pk", "acc_posted", "acc_held", "acc_low", "low_balance_threshold", "net_debit")


def _with_balances(employers: QuerySet[Any]) -> QuerySet[Any]:
    """`employers` (an Employer queryset) as rows of `_BALANCE_COLUMNS`: correlated subqueries for each one's
    account's cached balances and for its 30-day net debit (captures − refunds, summed by the database over the
    (employer, created_at) index)."""
    since = timezone.now() - timedelta(days=RUNWAY_WINDOW_DAYS)
    account = LedgerAccount.objects.filter(kind=AccountKind.EMPLOYER, employer_id=OuterRef("pk"))
    net_debit = (
        LedgerTransaction.objects.filter(
            employer_id=OuterRef("pk"),
            created_at__gte=since,
            kind__in=[TransactionKind.CAPTURE, TransactionKind.REFUND],
        )
        .order_by()
        .values("employer_id")
        .annotate(
            net=Coalesce(Sum("amount", filter=Q(kind=TransactionKind.CAPTURE)), 0)
            - Coalesce(Sum("amount", filter=Q(kind=TransactionKind.REFUND)), 0)
        )
        .values("net")
    )
    rows: QuerySet[Any] = employers.annotate(
        acc_posted=Coalesce(Subquery(account.values("posted")[:1]), Value(0)),
        acc_held=Coalesce(Subquery(account.values("held")[:1]), Value(0)),
        acc_low=Coalesce(Subquery(account.values("low_balance")[:1]), Value(False)),
        net_debit=Coalesce(Subquery(net_debit, output_field=IntegerField()), Value(0)),
    ).values_list(*_BALANCE_COLUMNS)
    return rows


def _balance_from_row(row: tuple[Any, ...]) -> Balance:
    employer_id, posted, held, low, threshold, net = (
        int(row[0]),
        int(row[1]),
        int(row[2]),
        bool(row[3]),
        int(row[4]),
        int(row[5]),
    )
    available = posted - held
    return Balance(
        employer_id=employer_id,
        currency=CURRENCY,
        posted=posted,
        held=held,
        available=available,
        low_balance=low,
        low_balance_threshold=threshold,
        runway_days=runway_days_from(available=available, net_debit=net),
    )


def balance_get(*, employer_id: int) -> Balance:
    """The employer's balance in ONE query: the employer row with correlated subqueries for its account's
    cached balances and for the 30-day net debit (captures − refunds, summed by the database over the
    (employer, created_at) index). An employer without an account yet has zero balances."""
    row = _with_balances(employer_filter(employer_id)).first()
    if row is None:
        raise EmployerNotFound(f"no employer {employer_id}")
    return _balance_from_row(row)


def balances_get(*, employer_ids: list[int]) -> dict[int, Balance]:
    """{employer id: balance} of the listed employers in ONE query (the same figures as `balance_get` for
    each; unknown ids are absent). The /ops/ low-balance panel lists ten at a time: one round trip instead of
    ten, which is what the panel's time was made of on a loaded machine."""
    if not employer_ids:
        return {}
    return {row[0]: _balance_from_row(row) for row in _with_balances(employers_filter(employer_ids))}


def entries_for_employer(
    *, employer_id: int, since: datetime | None = None, until: datetime | None = None
) -> QuerySet[LedgerEntry]:
    """Entries of the employer's endorsement account (system-account sides are not the partner's business),
    newest first, with their transaction."""
    qs = LedgerEntry.objects.filter(account__kind=AccountKind.EMPLOYER, account__employer_id=employer_id)
    if since is not None:
        qs = qs.filter(created_at__gte=since)
    if until is not None:
        qs = qs.filter(created_at__lt=until)
    return qs.select_related("transaction").order_by("-id")


def system_account_balances() -> dict[str, int]:
    """Σ credits − Σ debits of each system account (they keep no cached balance, ADR 0008)."""
    rows = (
        LedgerEntry.objects.filter(account__employer__isnull=True)
        .values("account__kind")
        .annotate(
            credits=Coalesce(Sum("amount", filter=Q(direction=Direction.CREDIT)), 0),
            debits=Coalesce(Sum("amount", filter=Q(direction=Direction.DEBIT)), 0),
        )
    )
    return {str(r["account__kind"]): int(r["credits"]) - int(r["debits"]) for r in rows}


# --- verification --------------------------------------------------------------------------------------------


@dataclass
class VerifyReport:
    accounts: int = 0
    transactions: int = 0
    holds: int = 0
    system_balances: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [
            f"accounts checked: {self.accounts}",
            f"transactions checked: {self.transactions}",
            f"holds checked: {self.holds}",
        ]
        out += [f"system account {kind}: {balance} paise" for kind, balance in sorted(self.system_balances.items())]
        out += [f"PROBLEM: {p}" for p in self.problems]
        out.append("ledger OK" if self.ok else f"ledger has {len(self.problems)} problem(s)")
        return out


def ledger_verify() -> VerifyReport:
    """Check every invariant of the ledger against the rows themselves:

    1. each employer account's cached `posted` == Σ credits − Σ debits of its entries, cached `held` ==
       Σ of its unresolved holds, and `posted − held >= 0`; system accounts keep no cache (both 0);
    2. every transaction balances: Σ debits == Σ credits == its amount (so no transaction lacks entries);
    3. no hold has more than one resolution, and each capture's transaction is a capture of the hold's amount;
    4. each employer entry's `balance_after` is its account's running balance in entry-id order (entries are
       numbered under the account's row lock, so id order is the order the balance changed in).

    On PostgreSQL, when called outside a transaction, everything is read in one REPEATABLE READ snapshot so
    concurrent postings cannot show up as false differences. A handful of GROUP BY queries, no per-row loop
    in the database.
    """
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return _verify()


def _verify() -> VerifyReport:
    """The invariants of ADR 0008 in four named steps; problems are reported in this order (each list capped at
    100 rows where it can grow with the data)."""
    report = VerifyReport()
    _verify_accounts(report)
    _verify_transactions(report)
    _verify_holds(report)
    _verify_running_balances(report)
    return report


def _verify_accounts(report: VerifyReport) -> None:
    """Every account's cached balances against its entries and unresolved holds; system accounts' balances are
    reported (Σ entries, paise)."""
    entry_sums: dict[int, tuple[int, int]] = {
        int(r["account_id"]): (int(r["credits"]), int(r["debits"]))
        for r in LedgerEntry.objects.order_by()
        .values("account_id")
        .annotate(
            credits=Coalesce(Sum("amount", filter=Q(direction=Direction.CREDIT)), 0),
            debits=Coalesce(Sum("amount", filter=Q(direction=Direction.DEBIT)), 0),
        )
    }
    open_holds: dict[int, int] = defaultdict(int)
    for r in Hold.objects.filter(resolution__isnull=True).order_by().values("account_id").annotate(total=Sum("amount")):
        open_holds[int(r["account_id"])] = int(r["total"])

    for account in LedgerAccount.objects.order_by("id").values("id", "kind", "employer_id", "posted", "held"):
        report.accounts += 1
        account_id = int(account["id"])
        credits, debits = entry_sums.get(account_id, (0, 0))
        derived = credits - debits
        label = f"account {account_id} ({account['kind']}, employer {account['employer_id']})"
        if account["kind"] == AccountKind.EMPLOYER:
            if account["posted"] != derived:
                report.problems.append(f"{label}: cached posted {account['posted']} != entries {derived}")
            if account["held"] != open_holds.get(account_id, 0):
                report.problems.append(
                    f"{label}: cached held {account['held']} != unresolved holds {open_holds.get(account_id, 0)}"
                )
            if account["posted"] - account["held"] < 0:
                report.problems.append(f"{label}: available {account['posted'] - account['held']} < 0")
        else:
            report.system_balances[str(account["kind"])] = derived
            if account["posted"] != 0 or account["held"] != 0:
                report.problems.append(f"{label}: system accounts keep no cached balance")
            if open_holds.get(account_id):
                report.problems.append(f"{label}: holds on a system account")


def _verify_transactions(report: VerifyReport) -> None:
    """Every transaction's entries balance (Σ debits = Σ credits = amount)."""
    report.transactions = LedgerTransaction.objects.count()
    unbalanced = (
        LedgerTransaction.objects.annotate(
            credits=Coalesce(Sum("entries__amount", filter=Q(entries__direction=Direction.CREDIT)), 0),
            debits=Coalesce(Sum("entries__amount", filter=Q(entries__direction=Direction.DEBIT)), 0),
        )
        .exclude(credits=F("debits"), debits=F("amount"))
        .values_list("id", "kind", "reference", "credits", "debits", "amount")[:100]
    )
    for txn_id, kind, reference, credits, debits, amount in unbalanced:
        report.problems.append(
            f"transaction {txn_id} ({kind}:{reference}): debits {debits}, credits {credits}, amount {amount}"
        )


def _verify_holds(report: VerifyReport) -> None:
    """Every hold resolves at most once, and a capture's transaction is a capture of the hold's amount."""
    report.holds = Hold.objects.count()
    twice = (
        HoldResolution.objects.order_by()
        .values("hold_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .values_list("hold_id", "n")
    )
    for hold_id, n in twice[:100]:
        report.problems.append(f"hold {hold_id} resolved {n} times")
    bad_captures = (
        HoldResolution.objects.filter(kind=ResolutionKind.CAPTURED)
        .exclude(transaction__kind=TransactionKind.CAPTURE, transaction__amount=F("hold__amount"))
        .values_list("hold_id", flat=True)
    )
    for hold_id in bad_captures[:100]:
        report.problems.append(f"hold {hold_id}: its capture transaction does not match the hold")


def _verify_running_balances(report: VerifyReport) -> None:
    """Every employer entry's `balance_after` is the running balance of its account in entry-id order."""
    signed = Case(When(direction=Direction.CREDIT, then=F("amount")), default=-F("amount"))
    off_running = (
        LedgerEntry.objects.filter(account__kind=AccountKind.EMPLOYER)
        .annotate(running=Window(Sum(signed), partition_by=[F("account_id")], order_by=F("id").asc()))
        .exclude(balance_after=F("running"))
        .order_by("id")
        .values_list("id", "account_id", "balance_after", "running")
    )
    for entry_id, account_id, balance_after, running in off_running[:100]:
        report.problems.append(
            f"entry {entry_id} (account {account_id}): balance_after {balance_after} != running balance {running}"
        )


def low_balance_employers(*, limit: int = 20) -> tuple[int, list[Balance]]:
    """(how many employer accounts are flagged low-balance, the balances — with runway — of the first
    `limit` of them, lowest available first). The flag is the one `low_balance` keeps per crossing (ADR
    0008), read through its account rows; the listed balances, with runway, are one `balances_get`: three
    queries in all."""
    flagged = LedgerAccount.objects.filter(kind=AccountKind.EMPLOYER, low_balance=True)
    count = flagged.count()
    ids = list(
        flagged.annotate(available_now=F("posted") - F("held"))
        .order_by("available_now", "employer_id")
        .values_list("employer_id", flat=True)[:limit]
    )
    balances = balances_get(employer_ids=[employer_id for employer_id in ids if employer_id is not None])
    return count, [balances[employer_id] for employer_id in ids if employer_id in balances]


def ledger_trail_for_endorsement(*, endorsement_id: int) -> dict[str, list[Any]]:
    """What the ledger did for one endorsement (the admin's endorsement page): its holds with their
    resolution, and its transactions' entries on the employer account (paise), oldest first."""
    holds = list(Hold.objects.filter(endorsement_id=endorsement_id).select_related("resolution").order_by("id"))
    entries = list(
        LedgerEntry.objects.filter(transaction__endorsement_id=endorsement_id, account__kind=AccountKind.EMPLOYER)
        .select_related("transaction")
        .order_by("id")
    )
    return {"holds": holds, "entries": entries}


def net_charges_and_last_posting_by_endorsement(
    endorsement_ids: QuerySet[Any],
) -> Iterator[tuple[int, int, datetime]]:
    """`(endorsement id, captures − refunds, time of the latest capture or refund)` (paise; an aware datetime)
    for the endorsements of `endorsement_ids` (a `values("pk")` queryset) that have money, in endorsement-id
    order, streamed in chunks of 2,000 (reconciliation leaves out money posted after the insurer's statement was
    read, ADR 0063)."""
    rows = (
        LedgerTransaction.objects.filter(
            endorsement_id__isnull=False,
            kind__in=(TransactionKind.CAPTURE, TransactionKind.REFUND),
            endorsement_id__in=endorsement_ids,
        )
        .values("endorsement_id")
        .annotate(
            net=Sum(Case(When(kind=TransactionKind.CAPTURE, then=F("amount")), default=-F("amount"))),
            last=Max("created_at"),
        )
        .order_by("endorsement_id")
        .values_list("endorsement_id", "net", "last")
    )
    for endorsement_id, net, last in rows.iterator(chunk_size=2000):
        if endorsement_id is not None:
            yield endorsement_id, int(net or 0), last
