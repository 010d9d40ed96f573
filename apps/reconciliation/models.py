"""Reconciliation (SPEC §8, issue 12, ADR 0040): what the insurer holds against what Keel holds.

Fields, constraints and trivial properties only; every write goes through `services.py`. Money is integer
paise. The insurer-side roster is keyed `(insurer, policy, employee_code)`; overlapping runs are excluded by
one `ReconciliationLock` row per `(insurer, employer)` (a unique constraint, with an expiry a live worker
keeps pushing forward).
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class RunStatus(models.TextChoices):
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


class DiscrepancyKind(models.TextChoices):
    MISSING_AT_INSURER = "missing_at_insurer"
    MISSING_INTERNALLY = "missing_internally"
    FIELD_MISMATCH = "field_mismatch"
    AMOUNT_MISMATCH = "amount_mismatch"
    CHARGE_MISSING = "charge_missing"


class DiscrepancySeverity(models.TextChoices):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class DiscrepancyStatus(models.TextChoices):
    OPEN = "open"
    RESOLVED = "resolved"
    IGNORED = "ignored"


class ReconciliationRun(models.Model):
    """One pull-and-match of an insurer's roster for a scope: one employer (or every employer of the insurer,
    operators only) and optionally one policy.

    Progress counters only grow, each page's increment committing with that page's upserts, so a resumed run
    never counts a row twice (`rows_pulled` counts entries this run saw for the first time).
    """

    insurer = models.ForeignKey("insurers.Insurer", on_delete=models.PROTECT, related_name="+")
    employer = models.ForeignKey(
        "employers.Employer",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="empty: every employer with a policy at this insurer (operators only)",
    )
    policy = models.ForeignKey("employers.Policy", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    # Every employer the run covers (its locks), fixed at start: the one named, the key's employers at this
    # insurer, or (operators) every employer with a policy there.
    employer_ids = models.JSONField(default=list, blank=True)
    # The partner whose key started the run (empty for the admin, the command and beat).
    partner = models.ForeignKey("partners.Partner", on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    requested_by = models.CharField(max_length=120)
    status = models.CharField(max_length=10, choices=RunStatus.choices, default=RunStatus.RUNNING)
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    # Times the abandoned-run sweep queued this run again after its worker stopped heartbeating (ADR 0061): at
    # most `MAX_RESUMES`. A worker executes the run only for the current count (older requests are stale), and
    # its lock rows carry the count it was taken for.
    resumes = models.PositiveSmallIntegerField(default=0)
    resumed_at = models.DateTimeField(null=True, blank=True)
    policies_total = models.PositiveIntegerField(default=0)
    policies_done = models.PositiveIntegerField(default=0)
    pages_pulled = models.PositiveIntegerField(default=0)
    rows_pulled = models.PositiveIntegerField(default=0)
    rows_matched = models.PositiveIntegerField(default=0)
    # Members the pull expects (ADR 0045): per policy, the total the insurer reports with its first page, else
    # Keel's active members; the base of `percent`.
    rows_expected = models.PositiveIntegerField(default=0)
    # Where a resumed pull starts: {"<policy id>": "<cursor of the next page>" | None (policy done)}; a policy
    # not pulled yet is absent.
    resume_cursors = models.JSONField(default=dict, blank=True)
    # When the run first asked the insurer for each policy's roster (ADR 0063): {"<policy id>": ISO 8601 time},
    # written with the policy's first recorded page and never moved later (a resumed run keeps the earliest).
    # The match judges only Keel rows unchanged since then; newer ones count as `changed_during_run`.
    insurer_read_at = models.JSONField(default=dict, blank=True)
    # Counts by discrepancy kind, plus "matched"; written when the run ends.
    summary = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-id",)
        constraints = [
            models.CheckConstraint(
                condition=Q(status="RUNNING", finished_at__isnull=True)
                | (~Q(status="RUNNING") & Q(finished_at__isnull=False)),
                name="recon_run_finished_iff_not_running",
            ),
            models.CheckConstraint(
                condition=Q(policy__isnull=True) | Q(employer__isnull=False), name="recon_run_policy_needs_employer"
            ),
        ]
        indexes = [models.Index(fields=["insurer", "status"])]

    def __str__(self) -> str:
        return f"run {self.pk} {self.insurer_id} ({self.status})"

    @property
    def percent(self) -> int:
        """Progress 0–100 (ADR 0045): 100 once COMPLETED; otherwise, with `rows_expected` known, 95 × the
        share of expected rows pulled plus 4 × the share matched, at most 99; without it, the share of
        policies pulled."""
        if self.status == RunStatus.COMPLETED:
            return 100
        if self.rows_expected:
            pulled = min(self.rows_pulled, self.rows_expected) * 95 // self.rows_expected
            matched = min(self.rows_matched, self.rows_expected) * 4 // self.rows_expected
            return min(99, pulled + matched)
        if self.policies_total:
            return min(99, self.policies_done * 100 // self.policies_total)
        return 0


class ReconciliationLock(models.Model):
    """The one-run-per-(insurer, employer) rule, held by the database: at most one row per pair.

    A run owns its rows while `expires_at` is in the future; its worker pushes `expires_at` forward after every
    page. A worker that dies stops refreshing, and the next run takes the rows over (see
    `services.reconciliation_locks_acquire`).
    """

    insurer = models.ForeignKey("insurers.Insurer", on_delete=models.CASCADE, related_name="+")
    employer = models.ForeignKey("employers.Employer", on_delete=models.CASCADE, related_name="+")
    run = models.ForeignKey(ReconciliationRun, on_delete=models.CASCADE, related_name="locks")
    # The run's `resumes` when this row was taken: a worker of an earlier attempt that wakes up after the
    # sweep resumed the run finds no row of its attempt to refresh, and stops (ADR 0061).
    attempt = models.PositiveSmallIntegerField(default=0)
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["insurer", "employer"], name="recon_one_run_per_insurer_employer"),
        ]

    def __str__(self) -> str:
        return f"{self.insurer_id}/{self.employer_id} → run {self.run_id}"


class InsurerRosterEntry(models.Model):
    """The insurer's current record of one member on one policy, as last pulled."""

    insurer = models.ForeignKey("insurers.Insurer", on_delete=models.PROTECT, related_name="+")
    policy = models.ForeignKey("employers.Policy", on_delete=models.PROTECT, related_name="+")
    employee_code = models.CharField(max_length=64)
    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100)
    date_of_birth = models.DateField(null=True, blank=True)
    sum_insured = models.BigIntegerField(help_text="paise")
    start_date = models.DateField(null=True, blank=True)
    gender = models.CharField(max_length=16, blank=True, help_text="when the insurer sends it")
    last_seen_run = models.ForeignKey(
        ReconciliationRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    first_seen_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        ordering = ("id",)
        verbose_name_plural = "insurer roster entries"
        constraints = [
            models.UniqueConstraint(fields=["insurer", "policy", "employee_code"], name="recon_roster_member_once"),
            models.CheckConstraint(condition=Q(sum_insured__gte=0), name="recon_roster_si_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.employee_code}@{self.policy_id}"


class InsurerRosterChange(models.Model):
    """One change of an `InsurerRosterEntry` (changed fields only, previous and new), kept 400 days."""

    entry = models.ForeignKey(InsurerRosterEntry, on_delete=models.CASCADE, related_name="changes")
    run = models.ForeignKey(ReconciliationRun, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    previous = models.JSONField(default=dict)
    new = models.JSONField(default=dict)
    changed_at = models.DateTimeField()

    class Meta:
        ordering = ("id",)
        indexes = [models.Index(fields=["changed_at"])]

    def __str__(self) -> str:
        return f"change {self.pk} of {self.entry_id}"


class Discrepancy(models.Model):
    """One difference a run found. `keel_value` / `insurer_value` hold the two sides (a field's value, a
    member record, or an amount in paise); `key` makes a run record each difference once."""

    run = models.ForeignKey(ReconciliationRun, on_delete=models.CASCADE, related_name="discrepancies")
    employer = models.ForeignKey("employers.Employer", on_delete=models.PROTECT, related_name="+")
    policy = models.ForeignKey("employers.Policy", on_delete=models.PROTECT, related_name="+")
    employee_code = models.CharField(max_length=64, blank=True)
    endorsement_id = models.BigIntegerField(null=True, blank=True)
    kind = models.CharField(max_length=24, choices=DiscrepancyKind.choices)
    field = models.CharField(max_length=32, blank=True)
    severity = models.CharField(max_length=8, choices=DiscrepancySeverity.choices)
    keel_value = models.JSONField(null=True, blank=True)
    insurer_value = models.JSONField(null=True, blank=True)
    key = models.CharField(max_length=200)
    status = models.CharField(max_length=8, choices=DiscrepancyStatus.choices, default=DiscrepancyStatus.OPEN)
    resolution_action = models.CharField(max_length=32, blank=True)
    resolution_note = models.TextField(blank=True)
    resolution_result = models.JSONField(default=dict, blank=True)
    resolved_by = models.CharField(max_length=120, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)
        verbose_name_plural = "discrepancies"
        constraints = [
            models.UniqueConstraint(fields=["run", "key"], name="recon_discrepancy_once_per_run"),
            models.CheckConstraint(
                condition=Q(status="open", resolved_at__isnull=True)
                | (~Q(status="open") & Q(resolved_at__isnull=False) & ~Q(resolution_action="")),
                name="recon_discrepancy_resolution_complete",
            ),
        ]
        indexes = [
            models.Index(fields=["run", "kind", "status"]),
            # `matching._accepted_before` asks, per batch of 1,000, which differences an operator settled before:
            # without this the lookup reads every discrepancy the policy ever had (5,000 more each nightly run).
            # Settled rows are few, so the partial index stays small (ADR 0051).
            models.Index(
                fields=["policy", "key"],
                condition=Q(status="ignored") | Q(resolution_action="flag_for_finance"),
                name="recon_discrepancy_settled",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.employee_code or self.endorsement_id} (run {self.run_id})"
