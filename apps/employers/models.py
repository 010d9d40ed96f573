from __future__ import annotations

from django.db import models
from django.db.models import Q

# The choices other apps read live in contracts.py (ADR 0039); re-exported for this app and its migrations.
from apps.employers.contracts import CoverageStatus, EmployerStatus, Gender


class Employer(models.Model):
    partner = models.ForeignKey("partners.Partner", on_delete=models.PROTECT, related_name="employers")
    name = models.CharField(max_length=200)
    external_ref = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=EmployerStatus.choices, default=EmployerStatus.ACTIVE)
    # Minor units (paise). Below it, the employer is `low_balance` (§6).
    low_balance_threshold = models.BigIntegerField(default=0)
    velocity_limit_per_hour = models.PositiveIntegerField(default=1000)
    contact_email = models.EmailField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("id",)
        constraints = [
            models.UniqueConstraint(fields=["partner", "external_ref"], name="employer_external_ref_per_partner"),
            models.CheckConstraint(condition=Q(low_balance_threshold__gte=0), name="employer_threshold_nonneg"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.external_ref})"


class Employee(models.Model):
    employer = models.ForeignKey(Employer, on_delete=models.PROTECT, related_name="employees")
    employee_code = models.CharField(max_length=64)
    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100)
    date_of_birth = models.DateField()
    gender = models.CharField(max_length=8, choices=Gender.choices)
    email = models.EmailField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("id",)
        constraints = [
            models.UniqueConstraint(fields=["employer", "employee_code"], name="employee_code_per_employer"),
        ]

    def __str__(self) -> str:
        return self.employee_code


class Policy(models.Model):
    employer = models.ForeignKey(Employer, on_delete=models.PROTECT, related_name="policies")
    insurer = models.ForeignKey("insurers.Insurer", on_delete=models.PROTECT, related_name="policies")
    policy_number = models.CharField(max_length=64)
    start_date = models.DateField()
    end_date = models.DateField()
    currency = models.CharField(max_length=3, default="INR")
    # Annual premium per 1,000 of sum insured, exact decimal (e.g. 4.5000).
    premium_rate_per_mille = models.DecimalField(max_digits=10, decimal_places=4)
    default_sum_insured = models.BigIntegerField(help_text="paise")
    backdating_days = models.PositiveIntegerField(default=30)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)
        verbose_name_plural = "policies"
        constraints = [
            models.UniqueConstraint(fields=["insurer", "policy_number"], name="policy_number_per_insurer"),
            models.CheckConstraint(condition=Q(end_date__gte=models.F("start_date")), name="policy_dates_ordered"),
            models.CheckConstraint(condition=Q(premium_rate_per_mille__gt=0), name="policy_rate_positive"),
            models.CheckConstraint(condition=Q(default_sum_insured__gt=0), name="policy_default_si_positive"),
            models.CheckConstraint(condition=Q(currency="INR"), name="policy_currency_inr"),
        ]

    def __str__(self) -> str:
        return self.policy_number


class Coverage(models.Model):
    employee = models.ForeignKey(Employee, on_delete=models.PROTECT, related_name="coverages")
    policy = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="coverages")
    sum_insured = models.BigIntegerField(help_text="paise")
    start_date = models.DateField()
    end_date = models.DateField(null=True, blank=True)
    status = models.CharField(max_length=8, choices=CoverageStatus.choices, default=CoverageStatus.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("id",)
        constraints = [
            # One active cover per member and policy, enforced by the database.
            models.UniqueConstraint(
                fields=["employee", "policy"], condition=Q(status="active"), name="one_active_coverage_per_member"
            ),
            models.CheckConstraint(condition=Q(sum_insured__gt=0), name="coverage_si_positive"),
        ]
        indexes = [models.Index(fields=["policy", "status"])]

    def __str__(self) -> str:
        return f"{self.employee_id}@{self.policy_id} ({self.status})"


class CoverageChange(models.Model):
    """Field-level history of a coverage: who, when, which endorsement, what changed (append-only)."""

    coverage = models.ForeignKey(Coverage, on_delete=models.PROTECT, related_name="changes")
    endorsement_id = models.BigIntegerField(null=True, blank=True)
    action = models.CharField(max_length=16)  # started | ended | updated
    changed_by = models.CharField(max_length=120)
    diff = models.JSONField(default=dict)  # {field: [old, new]}
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return f"{self.action} coverage {self.coverage_id}"
