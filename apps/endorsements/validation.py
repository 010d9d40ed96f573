"""Validation of endorsement requests (SPEC §7), shared by single requests and batch rows.

Member state is *projected*: the active coverage, then every endorsement still in flight for the same member
(policy, employee_code) applied in the order received. So an addition followed at once by a deletion of the
same member is valid, and a second addition of a member whose first addition is still in flight is not.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from django.db import connection

from apps.employers.contracts import CoverageStatus, EmployerStatus
from apps.employers.selectors import (
    COVERAGES_TABLE,
    EMPLOYEES_TABLE,
    coverage_sum_insured_active,
    coverage_sums_active,
)
from apps.endorsements.models import TERMINAL, Endorsement, EndorsementType

if TYPE_CHECKING:
    from apps.employers.models import Employer, Policy

# Above this many values, filter in Python rather than send an `IN (…)` list to the database.
LARGE_IN_LIST = 1000
MEMBER_FIELDS = ("first_name", "last_name", "date_of_birth", "gender", "email")
CORRECTION_FIELDS = (*MEMBER_FIELDS, "sum_insured")


@dataclass(slots=True)
class MemberState:
    covered: bool
    sum_insured: int | None


@dataclass(slots=True)
class EndorsementDraft:
    """A request that passed field validation, ready to be priced and stored."""

    type: str
    employee_code: str
    effective_date: date
    details: dict[str, Any] = field(default_factory=dict)  # member fields (addition) or changes (correction)
    sum_insured: int | None = None  # requested SI (addition, correction)

    def content_hash(self, *, employer_id: int, policy_id: int) -> str:
        canonical = {
            "employer": employer_id,
            "policy": policy_id,
            "type": self.type,
            "employee_code": self.employee_code,
            "effective_date": self.effective_date.isoformat(),
            "details": {k: (v.isoformat() if isinstance(v, date) else v) for k, v in sorted(self.details.items())},
            "sum_insured": self.sum_insured,
        }
        return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


AGE_MESSAGE = "The member's age on the effective date must be 0–100."


def age_on(dob: date, on: date) -> int:
    """Whole years from `dob` to `on` (the member rule of SPEC §7 wants 0–100 on the effective date; the parser
    checks it with the other fields, `parsing.draft_from_request`)."""
    return on.year - dob.year - ((on.month, on.day) < (dob.month, dob.day))


def check_context(
    *, employer: Employer, policy: Policy, effective_date: date, today: date, check_backdating: bool = True
) -> dict[str, str]:
    errors: dict[str, str] = {}
    if employer.status != EmployerStatus.ACTIVE:
        errors["employer"] = "The employer is suspended and accepts no new endorsements."
    if policy.employer_id != employer.pk:
        errors["policy"] = "The policy does not belong to this employer."
    elif not policy.start_date <= effective_date <= policy.end_date:
        errors["effective_date"] = (
            f"Must fall within the policy term {policy.start_date.isoformat()} – {policy.end_date.isoformat()}."
        )
    earliest = today - timedelta(days=policy.backdating_days)
    if check_backdating and "effective_date" not in errors and effective_date < earliest:
        errors["effective_date"] = (
            f"Must not be earlier than {earliest.isoformat()} (backdating limit {policy.backdating_days} days)."
        )
    return errors


def project_members(*, policy: Policy, employee_codes: Iterable[str]) -> dict[str, MemberState]:
    """Projected state of each member: active coverage, then in-flight endorsements in order. Two queries.

    For a large batch the queries filter by policy only and the codes are matched here: a 10,000-parameter
    `IN (…)` costs more to plan and bind than reading the policy's (code, sum insured) pairs.
    """
    codes = list(set(employee_codes))
    wanted = set(codes)
    large = len(codes) > LARGE_IN_LIST
    states = {code: MemberState(covered=False, sum_insured=None) for code in codes}
    for code, sum_insured in coverage_sums_active(policy=policy, employee_codes=None if large else codes):
        if code in wanted:
            states[code] = MemberState(covered=True, sum_insured=sum_insured)
    in_flight = Endorsement.objects.filter(policy=policy).exclude(status__in=TERMINAL)
    if not large:
        in_flight = in_flight.filter(employee_code__in=codes)
    for code, kind, in_flight_si in in_flight.order_by("id").values_list("employee_code", "type", "sum_insured"):
        if code in wanted:
            apply_to_projection(states[code], kind=kind, sum_insured=in_flight_si)
    return states


# The single-member projection on PostgreSQL, as one statement: the active coverage (ordered first), then the
# in-flight endorsements by id. Hand-written because it runs on every single `POST /endorsements`, where the
# ORM's compilation of the same two queries cost more than executing them (ADR 0013).
_MEMBER_SQL = f"""
SELECT 0 AS seq, '' AS kind, c.sum_insured
  FROM {COVERAGES_TABLE} c JOIN {EMPLOYEES_TABLE} e ON e.id = c.employee_id
 WHERE c.policy_id = %s AND c.status = %s AND e.employee_code = %s
UNION ALL
SELECT n.id, n.type, n.sum_insured
  FROM {Endorsement._meta.db_table} n
 WHERE n.policy_id = %s AND n.employee_code = %s AND NOT (n.status = ANY(%s))
ORDER BY seq
"""  # noqa: S608 - table names from model metadata; every value is a bound parameter


def project_member(*, policy: Policy, employee_code: str) -> MemberState:
    """`project_members` for one member (the single-endorsement hot path): its active coverage, then its
    in-flight endorsements in order — one statement on PostgreSQL, two ORM queries elsewhere."""
    state = MemberState(covered=False, sum_insured=None)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                _MEMBER_SQL,
                [policy.pk, CoverageStatus.ACTIVE.value, employee_code, policy.pk, employee_code, list(TERMINAL)],
            )
            rows = [(kind, sum_insured) for _, kind, sum_insured in cursor.fetchall()]
    else:
        rows = [
            ("", covered_si) for covered_si in coverage_sum_insured_active(policy=policy, employee_code=employee_code)
        ]
        rows += list(
            Endorsement.objects.filter(policy=policy, employee_code=employee_code)
            .exclude(status__in=TERMINAL)
            .order_by("id")
            .values_list("type", "sum_insured")
        )
    for kind, sum_insured in rows:
        if kind == "":
            state = MemberState(covered=True, sum_insured=sum_insured)
        else:
            apply_to_projection(state, kind=kind, sum_insured=sum_insured)
    return state


def apply_to_projection(state: MemberState, *, kind: str, sum_insured: int | None) -> None:
    if kind == EndorsementType.ADDITION:
        state.covered, state.sum_insured = True, sum_insured
    elif kind == EndorsementType.DELETION:
        state.covered, state.sum_insured = False, None
    elif sum_insured is not None:
        state.sum_insured = sum_insured


def member_errors(*, draft: EndorsementDraft, state: MemberState) -> dict[str, str]:
    """The member rules of SPEC §7 against the projected state, as {field path: message} (empty if none): an
    addition's member must not be covered (or being added); a deletion's or correction's member must be covered.
    The age rule (0–100 on the effective date) needs no state: the parser checks it with the other fields."""
    if draft.type == EndorsementType.ADDITION:
        if state.covered:
            return {"employee.employee_code": "The member is already covered on this policy (or being added)."}
        return {}
    if not state.covered:
        return {"employee_code": "The member is not covered on this policy."}
    return {}


class MemberError(Exception):
    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors
