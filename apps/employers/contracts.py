"""The names apps.employers writes, in one list (issue 9): its audit actions, and the choices other apps read
(employer status, member gender, coverage status; ADR 0039: apps never import each other's models). The values
are the stored strings."""

from __future__ import annotations

from dataclasses import dataclass

from django.db.models import TextChoices


class EmployerAuditAction(TextChoices):
    """`AuditEvent.action` values written by apps.employers."""

    EMPLOYER_CREATED = "employer.created"
    EMPLOYER_UPDATED = "employer.updated"
    POLICY_CREATED = "policy.created"


class EmployerStatus(TextChoices):
    """`Employer.status`: a suspended employer accepts no new endorsements (SPEC §5, §7)."""

    ACTIVE = "active"
    SUSPENDED = "suspended"


class Gender(TextChoices):
    """`Employee.gender`, also an endorsement row's `gender` (SPEC §7)."""

    MALE = "male"
    FEMALE = "female"
    OTHER = "other"


class CoverageStatus(TextChoices):
    """`Coverage.status`: one active cover per member and policy (SPEC §5)."""

    ACTIVE = "active"
    ENDED = "ended"


@dataclass(frozen=True, slots=True)
class EmployerContact:
    """Whom to tell about an employer's account (the ledger's low-balance mail): `contact_email` is `""` when the
    employer gave none."""

    name: str
    contact_email: str
