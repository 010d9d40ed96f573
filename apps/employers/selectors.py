"""Reads of employers and insurers, always scoped to what an API key may see (404 otherwise), and the reads the
endorsements and ledger apps make of employers, members, policies and coverage (ADR 0039: apps meet at
selectors, never at each other's models)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import date, datetime
from typing import Any

from django.db import connection
from django.db.models import Case, F, Q, QuerySet, Value, When
from django.db.models.functions import Greatest
from django.http import Http404

from apps.employers.contracts import EmployerContact
from apps.employers.models import Coverage, CoverageStatus, Employee, Employer, Policy
from apps.partners.contracts import Principal

# The tables, for the hand-written SQL of higher apps that joins them in one statement on a hot path (the member
# projection of `POST /endorsements`, the ledger's account RETURNING clause, analytics' partner semi-join): the
# SQL stays with its caller, the names come from this app's model metadata.
EMPLOYERS_TABLE: str = Employer._meta.db_table
EMPLOYEES_TABLE: str = Employee._meta.db_table
COVERAGES_TABLE: str = Coverage._meta.db_table


def employer_partners(employer_ids: Iterable[int]) -> dict[int, int]:
    """`{employer_id: partner_id}` for the employers among `employer_ids` that exist; one query. Registered with
    `apps.partners.ownership` at start-up, so partners (a lower layer) can ask without importing employers."""
    ids = sorted(set(employer_ids))
    if not ids:
        return {}
    return dict(Employer.objects.filter(pk__in=ids).values_list("pk", "partner_id"))


def employers_visible_to(principal: Principal) -> QuerySet[Employer]:
    qs = Employer.objects.filter(partner_id=principal.partner_id)
    if not principal.all_employers:
        qs = qs.filter(pk__in=principal.employer_ids)
    return qs


def policy_with_employer_for(principal: Principal, *, employer_id: int, policy_id: int) -> Policy | None:
    """The policy, with its employer, if it is that employer's and this key may act for the employer — the rule
    of `employers_visible_to`, as one join (no subquery) for the hot `POST /endorsements` path. None otherwise
    (the caller tells a foreign employer, 404, from a foreign policy, 422, with `employer_get_for`)."""
    if not principal.all_employers and employer_id not in principal.employer_ids:
        return None
    if connection.vendor == "postgresql":
        return _policy_with_employer_sql(partner_id=principal.partner_id, employer_id=employer_id, policy_id=policy_id)
    found = list(
        Policy.objects.select_related("employer").filter(
            pk=policy_id, employer_id=employer_id, employer__partner_id=principal.partner_id
        )
    )
    return found[0] if found else None


_POLICY_FIELDS = tuple(f.attname for f in Policy._meta.concrete_fields)
_EMPLOYER_FIELDS = tuple(f.attname for f in Employer._meta.concrete_fields)
# Names from model metadata; every value is a bound parameter.
_POLICY_WITH_EMPLOYER_SQL = (
    "SELECT "  # noqa: S608
    + ", ".join([*(f"p.{f.column}" for f in Policy._meta.concrete_fields)]
                + [f"m.{f.column}" for f in Employer._meta.concrete_fields])
    + f" FROM {Policy._meta.db_table} p JOIN {EMPLOYERS_TABLE} m ON m.id = p.employer_id"
    " WHERE p.id = %s AND p.employer_id = %s AND m.partner_id = %s"
)  # fmt: skip


def _policy_with_employer_sql(*, partner_id: int, employer_id: int, policy_id: int) -> Policy | None:
    """`policy_with_employer_for`'s join as one hand-written statement (PostgreSQL, whose driver returns every
    column of these two tables as the ORM would: no converters needed). The ORM's query compilation was the
    largest single cost of `POST /endorsements` in the web process (issue 15: ≈ 5,000 profiler events)."""
    with connection.cursor() as cursor:
        cursor.execute(_POLICY_WITH_EMPLOYER_SQL, [policy_id, employer_id, partner_id])
        row = cursor.fetchone()
    if row is None:
        return None
    split = len(_POLICY_FIELDS)
    policy = Policy.from_db(connection.alias, _POLICY_FIELDS, row[:split])
    employer = Employer.from_db(connection.alias, _EMPLOYER_FIELDS, row[split:])
    Policy.employer.field.set_cached_value(policy, employer)
    return policy


def employer_get_for(principal: Principal, employer_id: int | str) -> Employer:
    """The employer if this key may act for it; `Http404` for anything else (never 403: no leak)."""
    try:
        pk = int(employer_id)
    except (TypeError, ValueError):
        raise Http404
    employer = employers_visible_to(principal).filter(pk=pk).first()
    if employer is None:
        raise Http404
    return employer


def policies_visible_to(principal: Principal) -> QuerySet[Policy]:
    return Policy.objects.filter(employer__in=employers_visible_to(principal)).select_related("insurer", "employer")


def policy_get_for(principal: Principal, policy_id: int | str) -> Policy:
    try:
        pk = int(policy_id)
    except (TypeError, ValueError):
        raise Http404
    policy = policies_visible_to(principal).filter(pk=pk).first()
    if policy is None:
        raise Http404
    return policy


def employees_visible_to(principal: Principal) -> QuerySet[Employee]:
    return Employee.objects.filter(employer__in=employers_visible_to(principal))


def coverages_visible_to(principal: Principal) -> QuerySet[Coverage]:
    return Coverage.objects.filter(policy__employer__in=employers_visible_to(principal)).select_related(
        "employee", "policy"
    )


def coverage_active(*, policy_id: int, employee_code: str) -> Coverage | None:
    return (
        Coverage.objects.filter(
            policy_id=policy_id, employee__employee_code=employee_code, status=CoverageStatus.ACTIVE
        )
        .select_related("employee")
        .first()
    )


def coverages_active_for(*, members: Iterable[tuple[int, str]]) -> dict[tuple[int, str], Coverage]:
    """The active coverage of each (policy_id, employee_code) that has one, in one query per policy."""
    codes_by_policy: dict[int, set[str]] = {}
    for policy_id, code in members:
        codes_by_policy.setdefault(policy_id, set()).add(code)
    found: dict[tuple[int, str], Coverage] = {}
    for policy_id, codes in codes_by_policy.items():
        for coverage in Coverage.objects.filter(
            policy_id=policy_id, employee__employee_code__in=sorted(codes), status=CoverageStatus.ACTIVE
        ).select_related("employee"):
            found[(policy_id, coverage.employee.employee_code)] = coverage
    return found


def employer_exists(employer_id: int) -> bool:
    """Whether an employer with this id exists; one `EXISTS` query (the ledger opens accounts only for them)."""
    return Employer.objects.filter(pk=employer_id).exists()


def employer_filter(employer_id: int) -> QuerySet[Employer]:
    """The employer with this id as an unevaluated queryset (empty if none), for a caller that annotates its own
    subqueries onto the employer row and reads it in one statement (the ledger's balance summary)."""
    return Employer.objects.filter(pk=employer_id)


def employers_filter(employer_ids: list[int]) -> QuerySet[Employer]:
    """The employers with these ids as an unevaluated queryset (`employer_filter` for many; the ledger's
    balances of a list of employers)."""
    return Employer.objects.filter(pk__in=employer_ids)


def employer_contact(employer_id: int) -> EmployerContact | None:
    """The employer's name and contact e-mail (`""` if it has none), or None if there is no such employer; one
    query (the ledger's low-balance mail)."""
    row = Employer.objects.filter(pk=employer_id).values("name", "contact_email").first()
    return None if row is None else EmployerContact(name=row["name"], contact_email=row["contact_email"])


def employees_for(*, members: set[tuple[int, str]]) -> dict[tuple[int, str], Employee]:
    """The stored employees among `members` (`(employer_id, employee_code)` pairs), keyed the same way; one query
    (`employer_id IN … AND employee_code IN …`, then matched exactly here). Dispatch reads their details."""
    return {
        (employee.employer_id, employee.employee_code): employee
        for employee in Employee.objects.filter(
            employer_id__in={m[0] for m in members}, employee_code__in={m[1] for m in members}
        )
        if (employee.employer_id, employee.employee_code) in members
    }


def policies_get(policy_ids: Iterable[int]) -> dict[int, Policy]:
    """`{policy_id: Policy}` for the ids that exist; one query (`in_bulk`)."""
    return Policy.objects.in_bulk(policy_ids)


def coverage_sums_active(*, policy: Policy, employee_codes: list[str] | None) -> list[tuple[str, int]]:
    """`(employee_code, sum_insured)` (paise) of each active coverage of `policy`, for the members in
    `employee_codes` (None: every member of the policy; a large batch reads them all rather than bind a huge
    `IN` list); one query."""
    wanted: dict[str, object] = {"policy": policy, "status": CoverageStatus.ACTIVE}
    if employee_codes is not None:
        wanted["employee__employee_code__in"] = employee_codes
    return list(Coverage.objects.filter(**wanted).values_list("employee__employee_code", "sum_insured"))


def coverage_sum_insured_active(*, policy: Policy, employee_code: str) -> list[int]:
    """The sum insured (paise) of the member's active coverage of `policy`: one value, or none; one query."""
    return list(
        Coverage.objects.filter(
            policy=policy, status=CoverageStatus.ACTIVE, employee__employee_code=employee_code
        ).values_list("sum_insured", flat=True)
    )


# --- Reconciliation's reads (issue 12): Keel's side of the roster match ----------------------------------------
# A member row: (employee_code, first_name, last_name, date_of_birth, sum_insured in paise, coverage start_date).
MemberRow = tuple[str, str, str, date | None, int, date | None]
_MEMBER_FIELDS = (
    "employee__employee_code",
    "employee__first_name",
    "employee__last_name",
    "employee__date_of_birth",
    "sum_insured",
    "start_date",
)


def policy_employer_ids(
    *, insurer_id: int, employer_ids: Iterable[int] | QuerySet[Any, Any] | None = None
) -> list[int]:
    """Ids of the employers with a policy at the insurer (within `employer_ids` if given), sorted."""
    policies = Policy.objects.filter(insurer_id=insurer_id)
    if employer_ids is not None:
        policies = policies.filter(employer_id__in=employer_ids)
    return sorted(set(policies.values_list("employer_id", flat=True)))


def policy_scopes(
    *, insurer_id: int, employer_ids: Iterable[int], policy_id: int | None = None
) -> list[tuple[int, str, int]]:
    """`(policy id, policy number, employer id)` of the insurer's policies of these employers, in id order."""
    policies = Policy.objects.filter(insurer_id=insurer_id, employer_id__in=list(employer_ids))
    if policy_id is not None:
        policies = policies.filter(pk=policy_id)
    return list(policies.order_by("pk").values_list("pk", "policy_number", "employer_id"))


def policy_exists(*, policy_id: int, employer_id: int, insurer_id: int) -> bool:
    return Policy.objects.filter(pk=policy_id, employer_id=employer_id, insurer_id=insurer_id).exists()


def members_for_match(*, policy_id: int, changed_after: datetime) -> Iterator[tuple[MemberRow, bool, datetime]]:
    """The policy's cover as reconciliation judges it against an insurer roster read at `changed_after`
    (ADR 0063): every active cover, plus every other cover changed after `changed_after` (ended since), as
    `(member row, active now, last change)`; `last change` is the later of the cover's and the employee's
    `updated_at` (a start, an end, a sum insured or a member detail written). Ordered by employee code, the
    active cover of a code first; streamed in chunks of 2,000."""
    rows = (
        Coverage.objects.filter(policy_id=policy_id)
        .filter(Q(status=CoverageStatus.ACTIVE) | Q(updated_at__gt=changed_after))
        .annotate(
            active=Case(When(status=CoverageStatus.ACTIVE, then=Value(True)), default=Value(False)),
            changed_at=Greatest(F("updated_at"), F("employee__updated_at")),
        )
        .order_by("employee__employee_code", "-active", "pk")
        .values_list(*_MEMBER_FIELDS, "active", "changed_at")
    )
    for row in rows.iterator(chunk_size=2000):
        yield row[:6], bool(row[6]), row[7]


def active_member_count(*, policy_id: int) -> int:
    """How many members the policy actively covers (reconciliation's progress estimate)."""
    return Coverage.objects.filter(policy_id=policy_id, status=CoverageStatus.ACTIVE).count()


def active_member(*, policy_id: int, employee_code: str) -> tuple[MemberRow, str, str] | None:
    """One member's active cover as `(member row, gender, email)`, or None if the policy does not cover them."""
    row = (
        Coverage.objects.filter(
            policy_id=policy_id, status=CoverageStatus.ACTIVE, employee__employee_code=employee_code
        )
        .values_list(*_MEMBER_FIELDS, "employee__gender", "employee__email")
        .first()
    )
    if row is None:
        return None
    return row[:6], row[6], row[7]
