"""Reads for reconciliation (issue 12). Keel's side of the match is read here, read-only, from the employers
app's tables; nothing in this app writes there."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

from django.db.models import Case, F, QuerySet, Sum, When

from apps.employers.models import Coverage, CoverageStatus, Policy
from apps.endorsements.models import Endorsement
from apps.ledger.models import LedgerTransaction, TransactionKind
from apps.reconciliation.models import InsurerRosterEntry, ReconciliationRun


@dataclass(frozen=True)
class PolicyScope:
    policy_id: int
    policy_number: str
    employer_id: int


@dataclass(frozen=True)
class MemberRecord:
    """One member on one policy, as one side holds it (sum insured in paise)."""

    employee_code: str
    first_name: str
    last_name: str
    date_of_birth: date | None
    sum_insured: int
    start_date: date | None


def scope_employer_ids(*, insurer_id: int, employer_id: int | None) -> list[int]:
    """The employers a run covers: the one named, or every employer with a policy at the insurer."""
    if employer_id is not None:
        return [employer_id]
    return sorted(set(Policy.objects.filter(insurer_id=insurer_id).values_list("employer_id", flat=True)))


def run_policies(run: ReconciliationRun) -> list[PolicyScope]:
    """The policies a run pulls and matches, in id order (a resumed run walks them in the same order)."""
    qs = Policy.objects.filter(insurer_id=run.insurer_id)
    if run.employer_id is not None:
        qs = qs.filter(employer_id=run.employer_id)
    if run.policy_id is not None:
        qs = qs.filter(pk=run.policy_id)
    return [
        PolicyScope(policy_id=pk, policy_number=number, employer_id=employer_id)
        for pk, number, employer_id in qs.order_by("pk").values_list("pk", "policy_number", "employer_id")
    ]


def keel_members(*, policy_id: int) -> Iterator[MemberRecord]:
    """Keel's active coverage on a policy, ordered by employee code, streamed in chunks."""
    rows = (
        Coverage.objects.filter(policy_id=policy_id, status=CoverageStatus.ACTIVE)
        .order_by("employee__employee_code")
        .values_list(
            "employee__employee_code",
            "employee__first_name",
            "employee__last_name",
            "employee__date_of_birth",
            "sum_insured",
            "start_date",
        )
    )
    for row in rows.iterator(chunk_size=2000):
        yield MemberRecord(*row)


def insurer_members(*, run_id: int, insurer_id: int, policy_id: int) -> Iterator[MemberRecord]:
    """The insurer's roster of a policy as this run saw it (entries not seen by the run are gone at the
    insurer), ordered by employee code, streamed in chunks."""
    rows = (
        InsurerRosterEntry.objects.filter(insurer_id=insurer_id, policy_id=policy_id, last_seen_run_id=run_id)
        .order_by("employee_code")
        .values_list("employee_code", "first_name", "last_name", "date_of_birth", "sum_insured", "start_date")
    )
    for row in rows.iterator(chunk_size=2000):
        yield MemberRecord(*row)


def keel_charges(*, policy_id: int) -> Iterator[tuple[int, int]]:
    """Keel's net money per endorsement of a policy, `(endorsement_id, captures - refunds)` in paise, in
    endorsement-id order (the insurer's statement is compared with it). A read-only aggregate over the ledger's
    transactions; streamed in chunks."""
    rows = (
        LedgerTransaction.objects.filter(
            kind__in=(TransactionKind.CAPTURE, TransactionKind.REFUND),
            endorsement_id__in=Endorsement.objects.filter(policy_id=policy_id).values("pk"),
        )
        .values("endorsement_id")
        .annotate(net=Sum(Case(When(kind=TransactionKind.CAPTURE, then=F("amount")), default=-F("amount"))))
        .order_by("endorsement_id")
        .values_list("endorsement_id", "net")
    )
    for endorsement_id, net in rows.iterator(chunk_size=2000):
        yield int(endorsement_id), int(net or 0)


def runs_visible_to(*, partner_id: int, employer_ids: list[int] | None) -> QuerySet[ReconciliationRun]:
    """Runs a partner's key may see: runs of its employers (`employer_ids` None: all of the partner's)."""
    qs = ReconciliationRun.objects.filter(employer__partner_id=partner_id)
    if employer_ids is not None:
        qs = qs.filter(employer_id__in=employer_ids)
    return qs
