"""Loan applications, their credit reports and decisions (SPEC §9).

The PAN is stored only as AES-256-GCM ciphertext plus a keyed HMAC blind index (docs/adr/0009). Money is
integer paise. Status changes go through conditional UPDATEs on `version` in `services.py`
(docs/adr/0010); nothing here has behaviour beyond trivial properties.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

from django.db import models
from django.db.models import Q

# Rupees 1,00,00,000.00 in paise: the largest amount a partner may request (SPEC §9).
MAX_REQUESTED_AMOUNT = 10_000_000 * 100
# A monthly income above ₹10 crore is a typo, not an applicant.
MAX_MONTHLY_INCOME = 100_000_000 * 100
MIN_SCORE, MAX_SCORE = 300, 900


_uuid7_lock = threading.Lock()
_uuid7_last = [0, 0]  # [milliseconds, counter] of the last id this process made


def uuid7() -> uuid.UUID:
    """A time-ordered UUID (RFC 9562 version 7): 48-bit Unix milliseconds, a 12-bit counter, 62 random bits.

    The id is chosen before the INSERT because it is the associated data of the PAN ciphertext; being
    time-ordered keeps the primary-key index append-mostly and makes `ORDER BY id` chronological, which is
    what cursor pagination walks. The counter (RFC 9562 §6.2, method 1) keeps ids from one process strictly
    increasing within a millisecond; ids from different processes in the same millisecond may interleave.
    """
    with _uuid7_lock:
        millis = time.time_ns() // 1_000_000
        last_millis, counter = _uuid7_last
        if millis <= last_millis:
            millis, counter = last_millis, counter + 1
            if counter > 0xFFF:
                millis, counter = millis + 1, 0
        else:
            counter = 0
        _uuid7_last[:] = [millis, counter]
    value = (millis & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76  # version 7
    value |= counter << 64
    value |= 0x2 << 62  # RFC 4122 variant
    value |= int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    return uuid.UUID(int=value)


class LoanType(models.TextChoices):
    PERSONAL = "PERSONAL", "Personal"
    HOME = "HOME", "Home"
    AUTO = "AUTO", "Auto"


class LoanStatus(models.TextChoices):
    # Submitted; scoring and the automated decision have not finished. A scored application is still
    # PENDING (scoring is recorded by `credit_score`/`scored_at`, not by a partner-visible status).
    PENDING = "PENDING", "Pending"
    PRE_APPROVED = "PRE_APPROVED", "Pre-approved"
    REJECTED = "REJECTED", "Rejected"
    MANUAL_REVIEW = "MANUAL_REVIEW", "Manual review"


DECIDED_STATUSES = (LoanStatus.PRE_APPROVED, LoanStatus.REJECTED, LoanStatus.MANUAL_REVIEW)


class ReasonCode(models.TextChoices):
    CREDIT_SCORE_BELOW_THRESHOLD = "CREDIT_SCORE_BELOW_THRESHOLD"
    INCOME_TO_LOAN_RATIO = "INCOME_TO_LOAN_RATIO"
    MANUAL_APPROVED = "MANUAL_APPROVED"
    MANUAL_DECLINED = "MANUAL_DECLINED"


class DecisionKind(models.TextChoices):
    AUTOMATED = "AUTOMATED", "Automated"
    MANUAL = "MANUAL", "Manual (operator)"


class LoanApplication(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid7, editable=False)
    partner = models.ForeignKey("partners.Partner", on_delete=models.PROTECT, related_name="+")

    # PAN: nonce ‖ ciphertext ‖ tag under key `pan_key_version`, AAD = the application id. Never plaintext.
    pan_ciphertext = models.BinaryField()
    pan_key_version = models.PositiveSmallIntegerField()
    pan_blind_index = models.CharField(max_length=64)

    first_name = models.CharField(max_length=100)
    last_name = models.CharField(max_length=100)
    date_of_birth = models.DateField()
    email = models.EmailField(max_length=254)
    phone_number = models.CharField(max_length=10)  # 10 digits, no country prefix
    monthly_income = models.BigIntegerField(help_text="paise")
    requested_amount = models.BigIntegerField(help_text="paise")
    loan_type = models.CharField(max_length=16, choices=LoanType.choices)
    consent = models.BooleanField()

    status = models.CharField(max_length=16, choices=LoanStatus.choices, default=LoanStatus.PENDING)
    credit_score = models.PositiveSmallIntegerField(null=True, blank=True)
    scored_at = models.DateTimeField(null=True, blank=True)
    decision_reasons = models.JSONField(default=list, blank=True)
    rule_set_version = models.CharField(max_length=32, blank=True)
    decision_input_hash = models.CharField(max_length=64, blank=True)
    max_approved_amount = models.BigIntegerField(null=True, blank=True, help_text="paise")
    # Optimistic lock: every state change is `UPDATE … WHERE id = %s AND version = %s` and bumps it.
    version = models.PositiveIntegerField(default=0)

    created_at = models.DateTimeField()
    decided_at = models.DateTimeField(null=True, blank=True)
    decided_by = models.CharField(max_length=160, blank=True)

    class Meta:
        ordering = ("-id",)
        indexes = [
            models.Index(fields=["pan_blind_index", "partner", "created_at"], name="loanapp_pan_dup_idx"),
            models.Index(fields=["partner", "status"], name="loanapp_partner_status_idx"),
            models.Index(fields=["created_at"], name="loanapp_created_idx"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(consent=True), name="loanapp_consent_given"),
            models.CheckConstraint(condition=Q(monthly_income__gt=0), name="loanapp_income_positive"),
            models.CheckConstraint(
                condition=Q(requested_amount__gt=0, requested_amount__lte=MAX_REQUESTED_AMOUNT),
                name="loanapp_requested_amount_range",
            ),
            models.CheckConstraint(
                condition=Q(credit_score__isnull=True) | Q(credit_score__gte=MIN_SCORE, credit_score__lte=MAX_SCORE),
                name="loanapp_credit_score_range",
            ),
            models.CheckConstraint(
                condition=Q(status=LoanStatus.PENDING) | Q(decided_at__isnull=False, credit_score__isnull=False),
                name="loanapp_decided_has_score_and_time",
            ),
            models.CheckConstraint(
                condition=~Q(status=LoanStatus.PRE_APPROVED) | Q(max_approved_amount__isnull=False),
                name="loanapp_preapproved_has_max_amount",
            ),
            models.CheckConstraint(
                condition=Q(max_approved_amount__isnull=True) | Q(max_approved_amount__gt=0),
                name="loanapp_max_amount_positive",
            ),
            models.CheckConstraint(condition=Q(status__in=LoanStatus.values), name="loanapp_status_valid"),
            models.CheckConstraint(condition=Q(loan_type__in=LoanType.values), name="loanapp_loan_type_valid"),
            models.CheckConstraint(condition=Q(pan_key_version__gte=1), name="loanapp_pan_key_version_positive"),
        ]

    def __str__(self) -> str:
        return f"Loan application {self.pk} ({self.status})"

    @property
    def is_decided(self) -> bool:
        return self.status != LoanStatus.PENDING


class CreditReport(models.Model):
    """One bureau answer per scoring step: what was asked of which bureau and what came back.

    Holds no PAN and no name: `inputs` are the non-identifying scoring inputs, `factors` the bureau's
    breakdown (for the simulated bureau: base, each adjustment, the id-derived variation, the clamp).
    """

    application = models.ForeignKey(LoanApplication, on_delete=models.PROTECT, related_name="credit_reports")
    bureau = models.CharField(max_length=40)
    score = models.PositiveSmallIntegerField()
    factors = models.JSONField(default=dict)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ("-id",)
        constraints = [
            models.CheckConstraint(
                condition=Q(score__gte=MIN_SCORE, score__lte=MAX_SCORE), name="creditreport_score_range"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.bureau} score {self.score} for {self.application_id}"


class LoanDecision(models.Model):
    """Append-only record of every decision, automated or manual, with everything needed to reproduce it.

    `inputs` is the canonical decision input (score, income, requested amount, loan type, rule set) and
    `input_hash` its SHA-256; re-running rule set `rule_set_version` on `inputs` gives `status` again.
    """

    application = models.ForeignKey(LoanApplication, on_delete=models.PROTECT, related_name="decisions")
    kind = models.CharField(max_length=16, choices=DecisionKind.choices)
    status = models.CharField(max_length=16, choices=LoanStatus.choices)
    reasons = models.JSONField(default=list)
    rule_set_version = models.CharField(max_length=32)
    inputs = models.JSONField(default=dict)
    input_hash = models.CharField(max_length=64)
    max_approved_amount = models.BigIntegerField(null=True, blank=True, help_text="paise")
    note = models.TextField(blank=True)  # operator's reason for a manual decision
    decided_by = models.CharField(max_length=160)
    created_at = models.DateTimeField()

    class Meta:
        ordering = ("-id",)
        constraints = [
            models.CheckConstraint(condition=~Q(status=LoanStatus.PENDING), name="loandecision_not_pending"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.status} for {self.application_id}"
