"""Reads for reconciliation (issue 12). Keel's side of the match is read here, read-only, from the employers
app's tables; nothing in this app writes there."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime

from django.db.models import Q, QuerySet
from django.http import Http404

from apps.employers import selectors as employers
from apps.employers.selectors import employers_visible_to
from apps.endorsements.selectors import endorsement_ids_of_policy
from apps.ledger.selectors import net_charges_and_last_posting_by_endorsement
from apps.partners.contracts import Principal
from apps.reconciliation.models import Discrepancy, InsurerRosterEntry, ReconciliationRun


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
    gender: str = ""


def scope_employer_ids(*, insurer_id: int, employer_id: int | None) -> list[int]:
    """The employers a run covers: the one named if it has a policy at the insurer (else none), or every employer
    with a policy at the insurer."""
    if employer_id is not None:
        return employers.policy_employer_ids(insurer_id=insurer_id, employer_ids=[employer_id])
    return employers.policy_employer_ids(insurer_id=insurer_id)


def run_policies(run: ReconciliationRun) -> list[PolicyScope]:
    """The policies a run pulls and matches, in id order (a resumed run walks them in the same order)."""
    scopes = employers.policy_scopes(insurer_id=run.insurer_id, employer_ids=run.employer_ids, policy_id=run.policy_id)
    return [PolicyScope(policy_id=pk, policy_number=number, employer_id=employer) for pk, number, employer in scopes]


@dataclass(frozen=True)
class KeelMember:
    """One employee code of a policy as Keel holds it for a match (ADR 0063): `record` is its active cover now
    (None: its cover ended after the insurer's roster was read); `changed` says the member's cover or details
    were written after that read, so a difference from the roster may be the run's timing, not a fault."""

    employee_code: str
    record: MemberRecord | None
    changed: bool


def keel_members(*, policy_id: int, as_of: datetime) -> Iterator[KeelMember]:
    """Keel's cover of a policy for a match against a roster read at `as_of`, one `KeelMember` per employee code,
    ordered by code, streamed in chunks: every active cover, and every cover ended after `as_of` (the roster may
    still hold it). `changed`: some cover of the code, or the employee, was written after `as_of`."""
    current: KeelMember | None = None
    for row, active, changed_at in employers.members_for_match(policy_id=policy_id, changed_after=as_of):
        code, changed = row[0], changed_at > as_of
        if current is not None and current.employee_code == code:
            # A second cover of the same code (the active one comes first): only its change time counts.
            current = KeelMember(code, current.record, current.changed or changed)
            continue
        if current is not None:
            yield current
        current = KeelMember(code, MemberRecord(*row) if active else None, changed)
    if current is not None:
        yield current


def keel_member_count(*, policy_id: int) -> int:
    """How many members Keel actively covers on a policy (a run's expected rows when the insurer gives none)."""
    return employers.active_member_count(policy_id=policy_id)


def insurer_members(*, run_id: int, insurer_id: int, policy_id: int) -> Iterator[MemberRecord]:
    """The insurer's roster of a policy as this run saw it (entries not seen by the run are gone at the
    insurer), ordered by employee code, streamed in chunks."""
    rows = (
        InsurerRosterEntry.objects.filter(insurer_id=insurer_id, policy_id=policy_id, last_seen_run_id=run_id)
        .order_by("employee_code")
        .values_list("employee_code", "first_name", "last_name", "date_of_birth", "sum_insured", "start_date", "gender")
    )
    for row in rows.iterator(chunk_size=2000):
        yield MemberRecord(*row)


def keel_charges(*, policy_id: int) -> Iterator[tuple[int, int, datetime]]:
    """Keel's net money per endorsement of a policy, `(endorsement_id, captures - refunds, latest posting)` in
    paise and an aware time, in endorsement-id order (the insurer's statement is compared with it; a posting
    after the statement was read withholds the comparison, ADR 0063). A read-only aggregate over the ledger's
    transactions; streamed in chunks."""
    yield from net_charges_and_last_posting_by_endorsement(endorsement_ids_of_policy(policy_id))


def roster_read_at(*, run_id: int, policy_id: int) -> datetime:
    """When run `run_id` first asked the insurer for policy `policy_id`'s roster (ADR 0063; the earliest over
    every attempt of a resumed run), the time its match judges Keel at; the run's start when no page of the
    policy was recorded (the match then judges only what Keel held when the run started)."""
    read_at, started_at, created_at = ReconciliationRun.objects.values_list(
        "insurer_read_at", "started_at", "created_at"
    ).get(pk=run_id)
    stored = (read_at or {}).get(str(policy_id))
    if stored:
        return datetime.fromisoformat(stored)
    return started_at or created_at


def endorsement_employee_codes(*, policy_id: int, endorsement_ids: list[int | None]) -> dict[int, str]:
    """`{endorsement id: employee_code}` of those of `endorsement_ids` that are Keel endorsements on the policy
    (one query; an empty list asks nothing). Read through the endorsements app's selector of the policy's
    endorsements, the same subquery `keel_charges` uses."""
    ids = sorted({pk for pk in endorsement_ids if pk})
    if not ids:
        return {}
    rows = endorsement_ids_of_policy(policy_id).filter(pk__in=ids).values_list("pk", "employee_code")
    return {int(pk): str(code) for pk, code in rows}


def scope_employer_ids_for_key(*, principal: Principal, insurer_id: int, employer_id: int | None) -> list[int]:
    """The employers a key's run covers: the one named (already checked visible) if it has a policy at the
    insurer (else none), else every employer the key may act for with a policy at the insurer."""
    if employer_id is not None:
        return employers.policy_employer_ids(insurer_id=insurer_id, employer_ids=[employer_id])
    visible = employers_visible_to(principal).values("pk")
    return employers.policy_employer_ids(insurer_id=insurer_id, employer_ids=visible)


def run_visible_to(principal: Principal, run: ReconciliationRun) -> bool:
    """A key sees a run only if every employer it covers is one the key may act for (so an operator's run
    over several partners is never shown to a partner)."""
    if not run.employer_ids:
        return False
    visible = set(employers_visible_to(principal).filter(pk__in=run.employer_ids).values_list("pk", flat=True))
    return visible == set(run.employer_ids)


def runs_for(principal: Principal) -> QuerySet[ReconciliationRun]:
    """Runs a key may list, newest first: a run named for one employer the key may act for, and every
    all-employers run — this partner's, or an operator's (`reconcile`, the nightly run) — of which the caller
    keeps only those whose `employer_ids` all lie in `employer_ids_visible_to` (the rule of `run_get_for`, so
    the list shows exactly the runs the key may open by id)."""
    visible = employers_visible_to(principal).values("pk")
    return (
        ReconciliationRun.objects.select_related("insurer")
        .filter(
            Q(employer_id__in=visible)
            | Q(employer__isnull=True, partner_id=principal.partner_id)
            | Q(employer__isnull=True, partner__isnull=True)
        )
        .order_by("-id")
    )


def employer_ids_visible_to(principal: Principal) -> set[int]:
    """The ids of the employers `principal` may act for (one query)."""
    return set(employers_visible_to(principal).values_list("pk", flat=True))


def run_get_for(principal: Principal, run_id: int | str) -> ReconciliationRun:
    """The run if this key may see it; `Http404` otherwise (SPEC §2: never 403)."""
    try:
        pk = int(run_id)
    except (TypeError, ValueError):
        raise Http404 from None
    run = ReconciliationRun.objects.select_related("insurer").filter(pk=pk).first()
    if run is None or not run_visible_to(principal, run):
        raise Http404
    return run


def discrepancy_get_for(principal: Principal, discrepancy_id: int | str) -> Discrepancy:
    """The discrepancy if this key may see its run; `Http404` otherwise."""
    try:
        pk = int(discrepancy_id)
    except (TypeError, ValueError):
        raise Http404 from None
    discrepancy = Discrepancy.objects.select_related("run").filter(pk=pk).first()
    if discrepancy is None or not run_visible_to(principal, discrepancy.run):
        raise Http404
    return discrepancy


def keel_member_for_resend(*, policy_id: int, employee_code: str) -> tuple[MemberRecord, str, str] | None:
    """Keel's active cover of one member as `(record, gender, email)`, or None if Keel no longer covers it."""
    found = employers.active_member(policy_id=policy_id, employee_code=employee_code)
    if found is None:
        return None
    row, gender, email = found
    return MemberRecord(*row), gender, email


@dataclass(frozen=True)
class RunRow:
    """One reconciliation run as the operations dashboard lists it (plain values, no model instance)."""

    id: int
    insurer_code: str
    employer_id: int | None
    status: str
    rows_pulled: int
    rows_matched: int
    created_at: datetime
    finished_at: datetime | None


def reconciliation_runs_recent(*, limit: int = 10) -> list[RunRow]:
    """The `limit` most recent reconciliation runs, newest first (the /ops/ panel; operators see every
    partner's). One query on the primary key index; `limit` ≥ 0."""
    rows = ReconciliationRun.objects.order_by("-id").values_list(
        "id", "insurer__code", "employer_id", "status", "rows_pulled", "rows_matched", "created_at", "finished_at"
    )[:limit]
    return [RunRow(*row) for row in rows]
