"""The names apps.employers writes, in one list (issue 9): its audit actions. The values are the stored strings."""

from __future__ import annotations

from django.db.models import TextChoices


class EmployerAuditAction(TextChoices):
    """`AuditEvent.action` values written by apps.employers."""

    EMPLOYER_CREATED = "employer.created"
    EMPLOYER_UPDATED = "employer.updated"
    POLICY_CREATED = "policy.created"
