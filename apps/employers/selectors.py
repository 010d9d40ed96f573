"""Reads of employers and insurers, always scoped to what an API key may see (404 otherwise)."""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import QuerySet
from django.http import Http404

from apps.employers.models import Coverage, CoverageStatus, Employee, Employer, Policy
from apps.partners.contracts import Principal


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
    found = list(
        Policy.objects.select_related("employer").filter(
            pk=policy_id, employer_id=employer_id, employer__partner_id=principal.partner_id
        )
    )
    return found[0] if found else None


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
