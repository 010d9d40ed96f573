"""The sandbox insurer's own state: how it behaves (per code) and every endorsement it applied."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Q

DEFAULT_AGE_LIMIT_REASON = "Member age exceeds 65"


def default_rejection_rules() -> list[dict[str, Any]]:
    """Rules are checked in order; the first whose conditions all match rejects the item with its reason.

    Conditions: `kind` (str or list), `min_age_exclusive` (age on the effective date greater than this),
    `employee_code_prefix`, `employee_code_in` (list), `policy_number`.
    """
    return [{"kind": "addition", "min_age_exclusive": 65, "reason": DEFAULT_AGE_LIMIT_REASON}]


class SandboxMode(models.TextChoices):
    SYNC = "sync"
    CALLBACK = "callback"


class SandboxConfig(models.Model):
    code = models.SlugField(max_length=40, unique=True)
    latency_ms = models.PositiveIntegerField(default=0)
    # Share of requests answered 503 + Retry-After before anything is applied (0..1; not money).
    failure_rate = models.FloatField(default=0.0)
    mode = models.CharField(max_length=8, choices=SandboxMode.choices, default=SandboxMode.SYNC)
    callback_url = models.CharField(max_length=500, blank=True)
    callback_secret = models.CharField(
        max_length=200, blank=True, help_text="whsec_… (the Insurer's secret), sealed at rest (ADR 0044)"
    )
    rejection_rules = models.JSONField(default=default_rejection_rules, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("code",)
        verbose_name = "sandbox insurer configuration"
        constraints = [
            models.CheckConstraint(
                condition=Q(failure_rate__gte=0) & Q(failure_rate__lte=1), name="sandbox_failure_rate_0_1"
            ),
        ]

    def __str__(self) -> str:
        return self.code


class SandboxApplied(models.Model):
    """One endorsement the sandbox insurer applied. A repeated idempotency key increments `times_seen` and
    returns the stored result; it never applies again (tests assert `times_seen` and the row count)."""

    code = models.SlugField(max_length=40)
    idempotency_key = models.CharField(max_length=255)
    endorsement_id = models.BigIntegerField(null=True, blank=True)
    kind = models.CharField(max_length=16)
    employee_code = models.CharField(max_length=64, blank=True)
    policy_number = models.CharField(max_length=64, blank=True)
    outcome = models.CharField(max_length=16)  # confirmed | rejected
    insurer_reference = models.CharField(max_length=40, blank=True)
    rejection_reason = models.CharField(max_length=500, blank=True)
    times_seen = models.PositiveIntegerField(default=1)
    applied_at = models.DateTimeField()
    last_seen_at = models.DateTimeField()
    callback_delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("id",)
        verbose_name = "sandbox applied endorsement"
        constraints = [
            models.UniqueConstraint(fields=["code", "idempotency_key"], name="sandbox_applied_key_once"),
        ]

    def __str__(self) -> str:
        return f"{self.code}:{self.idempotency_key} ({self.outcome})"


class SandboxRosterMember(models.Model):
    """The sandbox insurer's roster: who it covers on a policy, as served by `GET /sandbox/<code>/roster`
    (reconciliation, issue 12). Tests and the demo load it and make it drift (drop a member, change a date of
    birth) through `apps.insurers.sandbox.roster`."""

    code = models.SlugField(max_length=40)
    policy_number = models.CharField(max_length=64)
    employee_code = models.CharField(max_length=64)
    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100)
    date_of_birth = models.DateField()
    sum_insured = models.BigIntegerField(help_text="paise")
    start_date = models.DateField()

    class Meta:
        ordering = ("code", "policy_number", "employee_code")
        verbose_name = "sandbox roster member"
        constraints = [
            models.UniqueConstraint(fields=["code", "policy_number", "employee_code"], name="sandbox_roster_once"),
        ]

    def __str__(self) -> str:
        return f"{self.code}:{self.policy_number}:{self.employee_code}"


class SandboxCharge(models.Model):
    """The sandbox insurer's statement of charges (its CD-account view): what it debited (+) or credited (-)
    for one endorsement it confirmed, in paise. Served by `GET /sandbox/<code>/statement`."""

    code = models.SlugField(max_length=40)
    policy_number = models.CharField(max_length=64)
    endorsement_id = models.BigIntegerField()
    amount = models.BigIntegerField(help_text="paise; debit > 0, credit < 0")

    class Meta:
        ordering = ("code", "policy_number", "endorsement_id")
        verbose_name = "sandbox charge"
        constraints = [
            models.UniqueConstraint(fields=["code", "endorsement_id"], name="sandbox_charge_once"),
        ]

    def __str__(self) -> str:
        return f"{self.code}:{self.endorsement_id} {self.amount}"


class SandboxRosterControl(models.Model):
    """How the sandbox's roster API misbehaves, per insurer code (tests, demo):

    - `throttle_every`: page numbers divisible by it answer 429 once each (the retry gets the page), with
      `Retry-After` of `retry_after_seconds`, as delta-seconds or, with `retry_after_http_date`, an HTTP date;
    - `failures_remaining`: the next N roster requests answer 503 (a transient failure), counting down.
    """

    code = models.SlugField(max_length=40, unique=True)
    throttle_every = models.PositiveIntegerField(default=0)
    retry_after_seconds = models.PositiveIntegerField(default=1)
    retry_after_http_date = models.BooleanField(default=False)
    failures_remaining = models.PositiveIntegerField(default=0)
    # Page numbers already answered 429 once (so that the retry of a page is served).
    throttled_pages = models.JSONField(default=list, blank=True)

    class Meta:
        verbose_name = "sandbox roster control"

    def __str__(self) -> str:
        return self.code
