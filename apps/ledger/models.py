"""Double-entry ledger of employers' endorsement (CD) accounts (SPEC §6, docs/adr/0008-ledger.md).

Sign convention: every account is credit-normal — its balance is Σ credits − Σ debits. A top-up credits the
employer's account and debits `topup_clearing` (money that came in from outside); a capture debits the employer
and credits `insurer_payable`; a refund does the opposite. System accounts therefore go negative/positive
freely: they mirror money outside Keel.

Holds are not entries: they earmark part of an employer's `posted` balance (`held`) until they resolve exactly
once, as a capture (a ledger transaction) or a release (no money moves).
"""

from __future__ import annotations

from django.db import models
from django.db.models import F, Q


class AccountKind(models.TextChoices):
    EMPLOYER = "employer_endorsement", "Employer endorsement account"
    INSURER_PAYABLE = "insurer_payable", "Insurer payable (system)"
    TOPUP_CLEARING = "topup_clearing", "Top-up clearing (system)"


SYSTEM_KINDS = (AccountKind.INSURER_PAYABLE, AccountKind.TOPUP_CLEARING)


class TransactionKind(models.TextChoices):
    TOPUP = "topup"
    CAPTURE = "capture"
    REFUND = "refund"


class Direction(models.TextChoices):
    DEBIT = "debit"
    CREDIT = "credit"


class ResolutionKind(models.TextChoices):
    CAPTURED = "captured"
    RELEASED = "released"


class LedgerAccount(models.Model):
    """An account. Employer accounts carry cached balances (`posted`, `held`) kept in step with their entries
    and holds by conditional UPDATEs; the database refuses `posted − held < 0` for them.

    System accounts keep no cached balance (`posted` and `held` stay 0): their balance is Σ of their entries,
    computed on read, so no employer ever waits on a system account's row (ADR 0008).
    """

    kind = models.CharField(max_length=24, choices=AccountKind.choices)
    employer = models.ForeignKey(
        "employers.Employer", on_delete=models.PROTECT, null=True, blank=True, related_name="ledger_accounts"
    )
    currency = models.CharField(max_length=3, default="INR")
    # Paise. Employer accounts only (see the class docstring).
    posted = models.BigIntegerField(default=0)
    held = models.BigIntegerField(default=0)
    # available < employer.low_balance_threshold, flipped once per crossing by a conditional UPDATE.
    low_balance = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)
        permissions = [("topup_ledgeraccount", "Can post operator top-ups")]
        constraints = [
            models.UniqueConstraint(
                fields=["employer"],
                condition=Q(kind=AccountKind.EMPLOYER),
                name="ledger_one_endorsement_account_per_employer",
            ),
            models.UniqueConstraint(
                fields=["kind"], condition=Q(employer__isnull=True), name="ledger_one_system_account_per_kind"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=[k.value for k in AccountKind]), name="ledger_account_kind_valid"
            ),
            models.CheckConstraint(
                condition=(Q(kind=AccountKind.EMPLOYER) & Q(employer__isnull=False))
                | (Q(kind__in=[k.value for k in SYSTEM_KINDS]) & Q(employer__isnull=True)),
                name="ledger_account_employer_matches_kind",
            ),
            models.CheckConstraint(condition=Q(currency="INR"), name="ledger_account_currency_inr"),
            models.CheckConstraint(condition=Q(held__gte=0), name="ledger_account_held_nonneg"),
            # `available` never below zero, enforced by the database.
            models.CheckConstraint(
                condition=~Q(kind=AccountKind.EMPLOYER) | Q(posted__gte=F("held")),
                name="ledger_account_available_nonneg",
            ),
            models.CheckConstraint(
                condition=Q(kind=AccountKind.EMPLOYER) | Q(posted=0, held=0, low_balance=False),
                name="ledger_system_account_uncached",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind}:{self.employer_id}" if self.employer_id else self.kind

    @property
    def available(self) -> int:
        return self.posted - self.held


class LedgerTransaction(models.Model):
    """One money movement; its entries balance. `(kind, reference)` is unique: a retried operation finds the
    transaction it already made instead of making another."""

    kind = models.CharField(max_length=16, choices=TransactionKind.choices)
    reference = models.CharField(max_length=200)
    employer = models.ForeignKey("employers.Employer", on_delete=models.PROTECT, related_name="ledger_transactions")
    amount = models.BigIntegerField(help_text="paise")
    # Plain integer: the endorsements app sits above the ledger and may not be imported here.
    endorsement_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)
        constraints = [
            models.UniqueConstraint(fields=["kind", "reference"], name="ledger_transaction_kind_reference_unique"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="ledger_transaction_amount_positive"),
            models.CheckConstraint(
                condition=Q(kind__in=[k.value for k in TransactionKind]), name="ledger_transaction_kind_valid"
            ),
        ]
        indexes = [models.Index(fields=["employer", "created_at"], name="ledger_txn_employer_time_idx")]

    def __str__(self) -> str:
        return f"{self.kind}:{self.reference}"


class LedgerEntry(models.Model):
    """One side of a transaction. Immutable (a PostgreSQL trigger refuses UPDATE and DELETE): corrections
    are new transactions."""

    transaction = models.ForeignKey(LedgerTransaction, on_delete=models.PROTECT, related_name="entries")
    account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="entries")
    direction = models.CharField(max_length=6, choices=Direction.choices)
    amount = models.BigIntegerField(help_text="paise")
    # The account's `posted` right after this entry; null on system accounts, whose balances are not
    # serialised (ADR 0008).
    balance_after = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)
        verbose_name_plural = "ledger entries"
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="ledger_entry_amount_positive"),
            models.CheckConstraint(
                condition=Q(direction__in=[d.value for d in Direction]), name="ledger_entry_direction_valid"
            ),
        ]
        indexes = [models.Index(fields=["account", "created_at"], name="ledger_entry_account_time_idx")]

    def __str__(self) -> str:
        return f"{self.direction} {self.amount} on {self.account_id}"


class Hold(models.Model):
    """Funds of an employer account earmarked for an endorsement in flight. `reference` is unique."""

    reference = models.CharField(max_length=200, unique=True)
    account = models.ForeignKey(LedgerAccount, on_delete=models.PROTECT, related_name="holds")
    amount = models.BigIntegerField(help_text="paise")
    endorsement_id = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)
        constraints = [models.CheckConstraint(condition=Q(amount__gt=0), name="ledger_hold_amount_positive")]

    def __str__(self) -> str:
        return self.reference


class HoldResolution(models.Model):
    """How a hold ended. One per hold — the unique `hold` column is what makes "a hold resolves exactly once"
    true even if two workers race (the second INSERT fails)."""

    hold = models.OneToOneField(Hold, on_delete=models.PROTECT, related_name="resolution")
    kind = models.CharField(max_length=8, choices=ResolutionKind.choices)
    # The capture's transaction; null for a release (no money moves).
    transaction = models.OneToOneField(
        LedgerTransaction, on_delete=models.PROTECT, null=True, blank=True, related_name="hold_resolution"
    )
    reason = models.CharField(max_length=200, blank=True)
    resolved_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)
        constraints = [
            models.CheckConstraint(
                condition=(Q(kind=ResolutionKind.CAPTURED) & Q(transaction__isnull=False))
                | (Q(kind=ResolutionKind.RELEASED) & Q(transaction__isnull=True)),
                name="ledger_resolution_transaction_matches_kind",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.hold_id} {self.kind}"
