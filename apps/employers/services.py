"""Writes for employers. Each runs in one transaction with its audit record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.forms.models import model_to_dict
from django.utils import timezone

from apps.audit.services import audit_record
from apps.common import bulk
from apps.common.actors import Actor
from apps.common.errors import Conflict, DomainValidationError
from apps.employers.contracts import EmployerAuditAction
from apps.employers.models import Coverage, CoverageChange, CoverageStatus, Employee, Employer, EmployerStatus, Policy
from apps.insurers.selectors import insurer_active_get

EMPLOYER_FIELDS = (
    "name",
    "external_ref",
    "status",
    "low_balance_threshold",
    "velocity_limit_per_hour",
    "contact_email",
)
EMPLOYER_MUTABLE_FIELDS = frozenset(EMPLOYER_FIELDS) - {"external_ref"}


def _snapshot(employer: Employer) -> dict[str, Any]:
    return model_to_dict(employer, fields=EMPLOYER_FIELDS)


@transaction.atomic
def employer_create(
    *,
    partner_id: int,
    name: str,
    external_ref: str,
    actor: Actor,
    low_balance_threshold: int = 0,
    contact_email: str = "",
    velocity_limit_per_hour: int = 1000,
    status: str = EmployerStatus.ACTIVE,
) -> Employer:
    existing = Employer.objects.filter(partner_id=partner_id, external_ref=external_ref).first()
    if existing is not None:
        raise Conflict(
            f"An employer with external_ref {external_ref!r} already exists.",
            slug="duplicate-employer",
            extra={"existing_id": existing.pk},
        )
    try:
        with transaction.atomic():
            employer = Employer.objects.create(
                partner_id=partner_id,
                name=name,
                external_ref=external_ref,
                status=status,
                low_balance_threshold=low_balance_threshold,
                contact_email=contact_email,
                velocity_limit_per_hour=velocity_limit_per_hour,
            )
    except IntegrityError:
        # Lost a race with a concurrent create of the same external_ref.
        existing = Employer.objects.get(partner_id=partner_id, external_ref=external_ref)
        raise Conflict(
            f"An employer with external_ref {external_ref!r} already exists.",
            slug="duplicate-employer",
            extra={"existing_id": existing.pk},
        )
    audit_record(
        actor=actor,
        action=EmployerAuditAction.EMPLOYER_CREATED,
        object_type="employer",
        object_id=employer.pk,
        employer_id=employer.pk,
        after=_snapshot(employer),
    )
    return employer


@transaction.atomic
def employer_update(*, employer: Employer, changes: dict[str, Any], actor: Actor) -> Employer:
    unknown = set(changes) - EMPLOYER_MUTABLE_FIELDS
    if unknown:
        raise DomainValidationError(dict.fromkeys(sorted(unknown), "This field cannot be changed."))
    locked = Employer.objects.select_for_update().get(pk=employer.pk)
    before = _snapshot(locked)
    for field, value in changes.items():
        setattr(locked, field, value)
    if changes:
        locked.save(update_fields=[*changes, "updated_at"])
        audit_record(
            actor=actor,
            action=EmployerAuditAction.EMPLOYER_UPDATED,
            object_type="employer",
            object_id=locked.pk,
            employer_id=locked.pk,
            before=before,
            after=_snapshot(locked),
        )
    return locked


POLICY_FIELDS = (
    "policy_number",
    "start_date",
    "end_date",
    "premium_rate_per_mille",
    "default_sum_insured",
    "backdating_days",
)
EMPLOYEE_DETAIL_FIELDS = ("first_name", "last_name", "date_of_birth", "gender", "email")


@transaction.atomic
def policy_create(
    *,
    employer: Employer,
    insurer_code: str,
    policy_number: str,
    start_date: date,
    end_date: date,
    premium_rate_per_mille: Decimal,
    default_sum_insured: int,
    backdating_days: int = 30,
    actor: Actor,
) -> Policy:
    errors: dict[str, str] = {}
    insurer = insurer_active_get(insurer_code)
    if insurer is None:
        errors["insurer"] = f"No active insurer with code {insurer_code!r}."
    if end_date < start_date:
        errors["end_date"] = "Must not be before start_date."
    if insurer is not None and Policy.objects.filter(insurer=insurer, policy_number=policy_number).exists():
        errors["policy_number"] = "This insurer already has a policy with this number."
    if errors:
        raise DomainValidationError(errors)
    assert insurer is not None
    policy = Policy.objects.create(
        employer=employer,
        insurer=insurer,
        policy_number=policy_number,
        start_date=start_date,
        end_date=end_date,
        premium_rate_per_mille=premium_rate_per_mille,
        default_sum_insured=default_sum_insured,
        backdating_days=backdating_days,
    )
    audit_record(
        actor=actor,
        action=EmployerAuditAction.POLICY_CREATED,
        object_type="policy",
        object_id=policy.pk,
        employer_id=employer.pk,
        after={**model_to_dict(policy, fields=POLICY_FIELDS), "insurer": insurer_code},
    )
    return policy


def employee_upsert(*, employer_id: int, employee_code: str, details: dict[str, Any]) -> tuple[Employee, dict]:
    """Create the employee or apply `details`; returns it and the {field: [old, new]} diff.
    Called inside the endorsement's transaction (its audit record covers it)."""
    employee = Employee.objects.select_for_update().filter(employer_id=employer_id, employee_code=employee_code).first()
    if employee is None:
        employee = Employee.objects.create(employer_id=employer_id, employee_code=employee_code, **details)
        return employee, {f: [None, _jsonable(v)] for f, v in details.items()}
    diff = {f: [_jsonable(getattr(employee, f)), _jsonable(v)] for f, v in details.items() if getattr(employee, f) != v}
    if diff:
        for field in diff:
            setattr(employee, field, details[field])
        employee.save(update_fields=[*diff, "updated_at"])
    return employee, diff


def coverage_start(
    *,
    employee: Employee,
    policy: Policy,
    sum_insured: int,
    start_date: date,
    endorsement_id: int | None,
    actor: Actor,
) -> Coverage:
    coverage = Coverage.objects.create(employee=employee, policy=policy, sum_insured=sum_insured, start_date=start_date)
    CoverageChange.objects.create(
        coverage=coverage,
        endorsement_id=endorsement_id,
        action="started",
        changed_by=actor.display,
        diff={"sum_insured": [None, sum_insured], "start_date": [None, start_date.isoformat()]},
    )
    return coverage


def employees_upsert_many(*, employer_id: int, members: dict[str, dict[str, Any]]) -> list[Employee]:
    """`employee_upsert` for many members of one employer (bulk activation of additions): existing employees
    are locked and updated where their details differ, the others created with one INSERT."""
    codes = sorted(members)
    existing = {
        e.employee_code: e
        for e in Employee.objects.select_for_update().filter(employer_id=employer_id, employee_code__in=codes)
    }
    changed: list[Employee] = []
    changed_fields: set[str] = set()
    for code, employee in existing.items():
        details = members[code]
        diff = [f for f, v in details.items() if getattr(employee, f) != v]
        for f in diff:
            setattr(employee, f, details[f])
        if diff:
            employee.updated_at = timezone.now()
            changed.append(employee)
            changed_fields.update(diff)
    if changed:
        bulk.bulk_update(changed, [*sorted(changed_fields), "updated_at"])
    created = Employee.objects.bulk_create(
        [
            Employee(employer_id=employer_id, employee_code=code, **members[code])
            for code in codes
            if code not in existing
        ],
        batch_size=1000,
    )
    return [*existing.values(), *created]


@dataclass(frozen=True, slots=True)
class CoverageStart:
    employee: Employee
    policy: Policy
    sum_insured: int
    start_date: date
    endorsement_id: int | None


def coverages_start_many(*, starts: Sequence[CoverageStart], actor: Actor) -> list[Coverage]:
    """`coverage_start` for many members: the coverages and their "started" changes, one INSERT each (the
    one-active-coverage constraint refuses a member already covered, as for a single start)."""
    coverages = Coverage.objects.bulk_create(
        [
            Coverage(employee=c.employee, policy=c.policy, sum_insured=c.sum_insured, start_date=c.start_date)
            for c in starts
        ],
        batch_size=1000,
    )
    CoverageChange.objects.bulk_create(
        [
            CoverageChange(
                coverage=coverage,
                endorsement_id=c.endorsement_id,
                action="started",
                changed_by=actor.display,
                diff={"sum_insured": [None, c.sum_insured], "start_date": [None, c.start_date.isoformat()]},
            )
            for coverage, c in zip(coverages, starts, strict=True)
        ],
        batch_size=1000,
    )
    return coverages


@dataclass(frozen=True, slots=True)
class CoverageEnd:
    coverage: Coverage
    end_date: date
    endorsement_id: int | None


def coverages_end_many(*, ends: Sequence[CoverageEnd], actor: Actor) -> None:
    """`coverage_end` for many coverages: each must still be active (checked under a row lock; otherwise the
    whole call is refused with nothing written), one UPDATE of their own end dates, one INSERT of the changes."""
    if not ends:
        return
    ids = [c.coverage.pk for c in ends]
    still_active = set(
        Coverage.objects.select_for_update()
        .filter(pk__in=ids, status=CoverageStatus.ACTIVE)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    if len(still_active) != len(set(ids)):
        raise DomainValidationError({"employee_code": "The member is not covered on this policy."})
    now = timezone.now()
    for c in ends:
        c.coverage.status, c.coverage.end_date, c.coverage.updated_at = CoverageStatus.ENDED, c.end_date, now
    bulk.bulk_update([c.coverage for c in ends], ["status", "end_date", "updated_at"])
    CoverageChange.objects.bulk_create(
        [
            CoverageChange(
                coverage=c.coverage,
                endorsement_id=c.endorsement_id,
                action="ended",
                changed_by=actor.display,
                diff={"status": ["active", "ended"], "end_date": [None, c.end_date.isoformat()]},
            )
            for c in ends
        ],
        batch_size=1000,
    )


def coverage_end(*, coverage: Coverage, end_date: date, endorsement_id: int | None, actor: Actor) -> Coverage:
    updated = Coverage.objects.filter(pk=coverage.pk, status=CoverageStatus.ACTIVE).update(
        status=CoverageStatus.ENDED, end_date=end_date, updated_at=timezone.now()
    )
    if updated != 1:
        raise DomainValidationError({"employee_code": "The member is not covered on this policy."})
    CoverageChange.objects.create(
        coverage=coverage,
        endorsement_id=endorsement_id,
        action="ended",
        changed_by=actor.display,
        diff={"status": ["active", "ended"], "end_date": [None, end_date.isoformat()]},
    )
    coverage.refresh_from_db()
    return coverage


def coverage_update(
    *, coverage: Coverage, sum_insured: int | None, employee_diff: dict, endorsement_id: int | None, actor: Actor
) -> Coverage:
    diff = dict(employee_diff)
    if sum_insured is not None and sum_insured != coverage.sum_insured:
        diff["sum_insured"] = [coverage.sum_insured, sum_insured]
        Coverage.objects.filter(pk=coverage.pk).update(sum_insured=sum_insured, updated_at=timezone.now())
        coverage.sum_insured = sum_insured
    if diff:
        CoverageChange.objects.create(
            coverage=coverage, endorsement_id=endorsement_id, action="updated", changed_by=actor.display, diff=diff
        )
    return coverage


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value
