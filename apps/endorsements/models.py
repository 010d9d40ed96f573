from __future__ import annotations

from django.db import models
from django.db.models import Q

# The status and type names live in contracts.py (other apps read them, ADR 0039); re-exported for this app.
from apps.endorsements.contracts import EndorsementStatus, EndorsementType

TERMINAL = frozenset(
    {EndorsementStatus.ACTIVE, EndorsementStatus.REJECTED, EndorsementStatus.FAILED, EndorsementStatus.CANCELLED}
)
# A partner may cancel before the endorsement reaches the insurer.
CANCELLABLE = frozenset(
    {
        EndorsementStatus.RECEIVED,
        EndorsementStatus.VALIDATED,
        EndorsementStatus.ON_HOLD_FUNDS,
        EndorsementStatus.ON_HOLD_REVIEW,
        EndorsementStatus.FUNDS_LOCKED,
    }
)


class PremiumDirection(models.TextChoices):
    DEBIT = "debit"
    CREDIT = "credit"
    NONE = "none"


class EndorsementBatch(models.Model):
    employer = models.ForeignKey("employers.Employer", on_delete=models.PROTECT, related_name="+")
    policy = models.ForeignKey("employers.Policy", on_delete=models.PROTECT, related_name="+")
    partner_id = models.BigIntegerField()
    source = models.CharField(max_length=8)  # csv | json
    total_rows = models.PositiveIntegerField()
    accepted = models.PositiveIntegerField()
    rejected = models.PositiveIntegerField()
    errors = models.JSONField(default=list)  # [{row, field, detail}]
    cancelled_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)
        verbose_name_plural = "endorsement batches"

    def __str__(self) -> str:
        return f"batch {self.pk}"


class Endorsement(models.Model):
    employer = models.ForeignKey("employers.Employer", on_delete=models.PROTECT, related_name="+")
    policy = models.ForeignKey("employers.Policy", on_delete=models.PROTECT, related_name="+")
    # Denormalised from the policy so the scheduler groups by insurer without a join.
    insurer = models.ForeignKey("insurers.Insurer", on_delete=models.PROTECT, related_name="+")
    partner_id = models.BigIntegerField()
    batch = models.ForeignKey(
        EndorsementBatch, null=True, blank=True, on_delete=models.PROTECT, related_name="endorsements"
    )
    type = models.CharField(max_length=12, choices=EndorsementType.choices)
    status = models.CharField(max_length=16, choices=EndorsementStatus.choices, default=EndorsementStatus.RECEIVED)
    employee_code = models.CharField(max_length=64)
    # Member details for additions, the requested changes for corrections, {} for deletions.
    details = models.JSONField(default=dict, blank=True)
    effective_date = models.DateField()
    sum_insured = models.BigIntegerField(null=True, blank=True, help_text="paise")
    sum_insured_before = models.BigIntegerField(null=True, blank=True, help_text="paise")
    premium_amount = models.BigIntegerField(default=0, help_text="paise, ≥ 0")
    premium_direction = models.CharField(max_length=8, choices=PremiumDirection.choices)
    annual_premium = models.BigIntegerField(default=0, help_text="paise")
    remaining_days = models.PositiveIntegerField(default=0)
    term_days = models.PositiveIntegerField(default=0)
    content_hash = models.CharField(max_length=64)
    # Sent to the insurer with every attempt, so a retried send is never applied twice.
    idempotency_key = models.CharField(max_length=64, unique=True)
    review_approved = models.BooleanField(default=False)
    # Bumped when an operator retries a FAILED endorsement: its earlier hold was released, so the new attempt
    # needs a hold of its own (hold references are idempotency keys and are never reused).
    funding_generation = models.PositiveSmallIntegerField(default=0)
    insurer_reference = models.CharField(max_length=100, blank=True)
    rejection_class = models.CharField(max_length=24, blank=True)
    rejection_reason = models.CharField(max_length=500, blank=True)
    last_error = models.TextField(blank=True)
    ready_at = models.DateTimeField(null=True, blank=True, help_text="when it became ready to send")
    sent_at = models.DateTimeField(null=True, blank=True)
    activated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("id",)
        constraints = [
            models.CheckConstraint(condition=Q(premium_amount__gte=0), name="endorsement_premium_nonneg"),
            models.CheckConstraint(
                condition=Q(premium_direction="none", premium_amount=0)
                | (~Q(premium_direction="none") & Q(premium_amount__gt=0)),
                name="endorsement_direction_matches_amount",
            ),
        ]
        indexes = [
            models.Index(fields=["employer", "status"]),
            models.Index(fields=["policy", "employee_code", "id"]),
            models.Index(fields=["employer", "content_hash", "created_at"]),
            models.Index(fields=["batch", "status"]),
            models.Index(
                fields=["insurer", "ready_at"],
                condition=Q(status__in=["VALIDATED", "FUNDS_LOCKED"], ready_at__isnull=False),
                name="endorsement_ready_idx",
            ),
            models.Index(fields=["employer", "id"], condition=Q(status="ON_HOLD_FUNDS"), name="endorsement_parked_idx"),
            # /ops/ funnel and the per-status metrics: an index-only GROUP BY status (ADR 0033).
            models.Index(fields=["status"], name="endorsement_status_idx"),
            # Analytics percentiles (RECEIVED → ACTIVE) read one duration bucket of ACTIVE rows index-only from
            # `endorsement_active_bucket_idx`, an expression index made by migration 0005 (ADR 0053).
        ]

    def __str__(self) -> str:
        return f"endorsement {self.pk} ({self.type}, {self.status})"

    @property
    def hold_reference(self) -> str:
        suffix = f":{self.funding_generation}" if self.funding_generation else ""
        return f"endorsement:{self.pk}{suffix}"

    @property
    def member_key(self) -> str:
        return f"member:{self.policy_id}:{self.employee_code}"


class EndorsementHistory(models.Model):
    endorsement = models.ForeignKey(Endorsement, on_delete=models.CASCADE, related_name="history")
    from_status = models.CharField(max_length=16, blank=True)
    to_status = models.CharField(max_length=16)
    detail = models.CharField(max_length=500, blank=True)
    actor = models.CharField(max_length=120)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)
        verbose_name_plural = "endorsement history"

    def __str__(self) -> str:
        return f"{self.endorsement_id}: {self.from_status}→{self.to_status}"


class EndorsementRollup(models.Model):
    """Endorsement counts and premium sums per partner, Asia/Kolkata hour of receipt, status, type and
    rejection class (ADR 0047). PostgreSQL only, written by statement-level triggers on the endorsement
    table in the same transaction as the change: each statement appends signed delta rows (never updates
    one, so concurrent transitions never wait on or deadlock over a shared counter row);
    `rollup_compact` folds them. The figure of a key is the SUM over all its rows, compacted or not.
    `debited`/`credited` are paise of ACTIVE debit/credit endorsements, `activated` the ACTIVE rows with an
    `activated_at`. Percentiles never come from here."""

    partner_id = models.BigIntegerField()
    hour = models.DateTimeField(help_text="start of the Asia/Kolkata hour the endorsements were received in")
    status = models.CharField(max_length=16)
    type = models.CharField(max_length=12)
    rejection_class = models.CharField(max_length=24, blank=True)
    n = models.BigIntegerField()
    debited = models.BigIntegerField(help_text="paise")
    credited = models.BigIntegerField(help_text="paise")
    activated = models.BigIntegerField()
    compacted = models.BooleanField(default=False)

    class Meta:
        indexes = [
            models.Index(fields=["partner_id", "hour"], name="endorsement_rollup_idx"),
            models.Index(fields=["hour"], name="endorsement_rollup_hour_idx"),
            models.Index(fields=["id"], condition=Q(compacted=False), name="endorsement_rollup_delta_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.partner_id} {self.hour:%Y-%m-%d %H}h {self.status}/{self.type}: {self.n}"


class EndorsementDurationRollup(models.Model):
    """How many ACTIVE endorsements (with an `activated_at`) per partner, Asia/Kolkata day of receipt and
    RECEIVED → ACTIVE duration bucket (ADR 0053). PostgreSQL only, written by the same statement-level
    triggers as `EndorsementRollup` (signed delta rows, folded by `rollup_compact`); the bucket is the SQL
    function `endorsement_duration_bucket(created_at, activated_at)`, non-decreasing in the duration. It only
    tells which bucket holds a percentile's rank: the value itself is read from the endorsement rows of that
    bucket, so percentiles stay exact."""

    partner_id = models.BigIntegerField()
    day = models.DateField(help_text="Asia/Kolkata date the endorsements were received on")
    bucket = models.IntegerField(help_text="endorsement_duration_bucket(created_at, activated_at)")
    n = models.BigIntegerField()
    compacted = models.BooleanField(default=False)

    class Meta:
        indexes = [
            models.Index(fields=["partner_id", "day"], name="endorsement_durroll_idx"),
            models.Index(fields=["day"], name="endorsement_durroll_day_idx"),
            models.Index(fields=["id"], condition=Q(compacted=False), name="endorsement_durroll_delta_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.partner_id} {self.day} bucket {self.bucket}: {self.n}"
