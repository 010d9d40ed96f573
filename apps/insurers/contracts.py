"""Types other apps use to talk to insurers through this app (the endorsements app is the main caller).

Dates are `datetime.date`, money is integer paise. These types carry no Django model, so a caller never
imports this app's models.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

from django.db.models import TextChoices

EndorsementKind = Literal["addition", "deletion", "correction"]
PremiumDirection = Literal["debit", "credit", "none"]
SubmissionOutcome = Literal["confirmed", "rejected", "pending"]


@dataclass(frozen=True)
class MemberData:
    employee_code: str
    first_name: str
    last_name: str
    date_of_birth: date
    gender: str
    email: str


@dataclass(frozen=True)
class EndorsementSubmission:
    endorsement_id: int
    # Stable across retries of the same endorsement: the insurer applies one key at most once.
    idempotency_key: str
    kind: EndorsementKind
    policy_number: str
    effective_date: date
    member: MemberData
    sum_insured: int  # paise
    premium_amount: int  # paise, >= 0
    premium_direction: PremiumDirection


@dataclass(frozen=True)
class SubmissionResult:
    endorsement_id: int
    # "pending": the insurer accepted the request and will send the result by callback
    # (topic "insurer.result_received").
    outcome: SubmissionOutcome
    insurer_reference: str | None = None
    rejection_class: str | None = None
    rejection_reason: str | None = None


class RejectionClass(TextChoices):
    DUPLICATE_MEMBER = "duplicate_member"
    DATA_MISMATCH = "data_mismatch"
    AGE_LIMIT = "age_limit"
    DOCUMENTS_REQUIRED = "documents_required"
    TRANSIENT = "transient"
    # Keel could not send at all (no adapter, bad or missing configuration or credentials): retrying cannot
    # help until an operator fixes the insurer's setup (SPEC §8).
    CONFIGURATION = "configuration"
    UNKNOWN = "unknown"


class TransientInsurerError(Exception):
    """The insurer could not take the request now (timeout, 5xx, 429, circuit open, local rate limit).

    Nothing was decided about the submissions: retry them later with the same idempotency keys, not before
    `retry_after` seconds when it is set.
    """

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class InsurerCallDeferred(TransientInsurerError):
    """Nothing was sent: our own circuit breaker for this insurer is open (or its half-open probes are all
    taken) or our outbound rate limit is spent. Retry after `retry_after` seconds; the insurer did not fail,
    so the caller's retry budget is not spent (ADR 0025)."""


class InsurerConfigurationError(Exception):
    """Keel cannot send to this insurer as it is set up: no adapter for its protocol, a missing or malformed
    endpoint or folder, missing credentials, or no such insurer. Nothing was sent; retrying cannot help, so
    callers fail the endorsements at once with class `configuration` and this message as the reason."""


class UnknownInsurerError(InsurerConfigurationError, LookupError):
    """No insurer has this code."""


class ProtocolNotSupportedError(InsurerConfigurationError, NotImplementedError):
    """The insurer's protocol has no gateway adapter."""


class InsurerTopic(TextChoices):
    """Outbox topics apps.insurers writes; the endorsements app consumes both."""

    # One insurer result, published by the callback endpoint (and the sandbox insurers).
    RESULT_RECEIVED = "insurer.result_received"
    # A batch of insurer results (a result file's rows, in chunks), payload `{"insurer", "source", "results":
    # [{endorsement_id, outcome, insurer_reference, rejection_class, rejection_reason, idempotency_key}]}`; the
    # endorsements app applies each chunk in one transaction.
    RESULTS_RECEIVED = "insurer.results_received"


class InsurerAuditAction(TextChoices):
    """`AuditEvent.action` values written by apps.insurers."""

    CREDENTIALS_SET = "insurer.credentials_set"
    CALLBACK_SECRET_SET = "insurer.callback_secret_set"
    SANDBOX_REGISTERED = "insurer.sandbox_registered"
    SANDBOX_ADDRESS_REPAIRED = "insurer.sandbox_address_repaired"
    # The conflict lifecycle (issue 8, kind 11; ADR 0020).
    CONFLICT_RECORDED = "insurer.result_conflict_recorded"
    CONFLICT_ACCEPTED = "insurer.result_conflict_accepted"
    CONFLICT_REVERSAL_REQUESTED = "insurer.result_conflict_reversal_requested"


# --- Results that contradict a decided state (issue 8, kind 11; ADR 0020) ----------------------------------


@dataclass(frozen=True)
class DecidedState:
    """What Keel holds about an endorsement, as the endorsements app reports it to this app.

    `covered`: True once Keel holds it confirmed by the insurer (CONFIRMED, ACTIVE), False once Keel decided it
    will not be (FAILED, CANCELLED, REJECTED), None while undecided (in flight).
    """

    status: str
    covered: bool | None


class InsurerProtocol(TextChoices):
    """How Keel talks to an insurer (SPEC §8); `Insurer.protocol`."""

    REST = "rest", "REST (JSON over HTTPS)"
    SOAP = "soap", "SOAP"
    FILE = "file", "File exchange"
