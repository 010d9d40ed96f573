"""Every write of the loan prequalification flow (SPEC §9). Each state change commits together with its
audit record and its outbox event; status changes are optimistic-locked on `version` (docs/adr/0010)."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from apps.audit.contracts import PiiAction
from apps.audit.services import audit_record, pii_access_record
from apps.common.actors import Actor
from apps.common.bulk import insert_one
from apps.common.errors import Conflict, DomainValidationError
from apps.common.money import format_minor
from apps.loan_applications import pan as pan_crypto
from apps.loan_applications.bureau import BureauReport
from apps.loan_applications.contracts import LoanAuditAction, LoanTopic
from apps.loan_applications.events import loan_decided_event_record
from apps.loan_applications.metrics import decision_committed
from apps.loan_applications.models import (
    MAX_REQUESTED_AMOUNT,
    CreditReport,
    DecisionKind,
    LoanApplication,
    LoanDecision,
    LoanStatus,
    LoanType,
    ReasonCode,
    uuid7,
)
from apps.loan_applications.rules import INCOME_MULTIPLE, RULE_SET_VERSION, DecisionInputs, decide, inputs_sha256

OBJECT_TYPE = "loan_application"
DUPLICATE_WINDOW = timedelta(hours=24)
# Namespaces the advisory-lock keys of this module (first 4 bytes of every key).
_LOCK_NAMESPACE = b"loan"


class DuplicateLoanApplication(Conflict):
    def __init__(self, existing_id: uuid.UUID) -> None:
        super().__init__(
            "An application with this PAN is still pending or was submitted in the last 24 hours.",
            slug="duplicate-loan-application",
            extra={"existing_id": str(existing_id)},
        )
        self.existing_id = existing_id


def _message_key(application_id: uuid.UUID) -> str:
    # One key per application: the outbox applies its submitted → scored → decided events in order.
    return f"loan:{application_id}"


def _lock_pan(*, partner_id: int, pan_blind_index: str) -> None:
    """Serialise concurrent submissions of one PAN for one partner until this transaction ends.

    A transaction-scoped PostgreSQL advisory lock keyed by (partner, blind index): the second of two
    concurrent submissions waits here, then sees the first one's committed row in its duplicate check.
    A partial unique index cannot express "or created in the last 24 h" (now() is not immutable), hence
    the lock. SQLite needs nothing: its write transactions are serialised (BEGIN IMMEDIATE).
    """
    if connection.vendor != "postgresql":
        return
    digest = hashlib.sha256(f"{partner_id}:{pan_blind_index}".encode()).digest()
    key = int.from_bytes(_LOCK_NAMESPACE + digest[:4], "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


_DUPLICATE_SQL = (
    f"SELECT id FROM {LoanApplication._meta.db_table}"  # noqa: S608 - the table name from model metadata
    " WHERE partner_id = %s AND pan_blind_index = %s AND (status = %s OR created_at >= %s)"
    " ORDER BY created_at DESC LIMIT 1"
)


def loan_application_find_duplicate(*, partner_id: int, pan_blind_index: str) -> LoanApplication | None:
    """The partner's latest application for this PAN (by blind index) that is still PENDING or was created in
    the last 24 h (SPEC §9), with only its id loaded; None if there is none. One hand-written statement on
    PostgreSQL — it runs on every `POST /loan-applications` and the ORM's compilation cost more than the
    query (issue 15) — and the same filter through the ORM elsewhere."""
    since = timezone.now() - DUPLICATE_WINDOW
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_DUPLICATE_SQL, [partner_id, pan_blind_index, str(LoanStatus.PENDING), since])
            row = cursor.fetchone()
        return None if row is None else LoanApplication.from_db(connection.alias, ("id",), row)
    return (
        LoanApplication.objects.filter(partner_id=partner_id, pan_blind_index=pan_blind_index)
        .filter(Q(status=LoanStatus.PENDING) | Q(created_at__gte=since))
        .only("id")
        .order_by("-created_at")
        .first()
    )


def _check_invariants(*, pan: str, consent: bool, monthly_income: int, requested_amount: int, loan_type: str) -> None:
    """The application invariants the API validated, re-checked for any caller; `DomainValidationError` naming
    every failing field (amounts in paise)."""
    errors: dict[str, str] = {}
    if reason := pan_crypto.pan_validation_error(pan):
        errors["pan_number"] = reason
    if consent is not True:
        errors["consent"] = "The applicant's consent is required."
    if monthly_income <= 0:
        errors["monthly_income"] = "Must be greater than 0."
    if not 0 < requested_amount <= MAX_REQUESTED_AMOUNT:
        errors["requested_amount"] = f"Must be greater than 0 and at most {format_minor(MAX_REQUESTED_AMOUNT)}."
    if loan_type not in LoanType.values:
        errors["loan_type"] = "Unknown loan type."
    if errors:
        raise DomainValidationError(errors)


# long: one keyword parameter per application field and a numbered docstring; the body is ~45 lines.
@transaction.atomic
def loan_application_create(
    *,
    partner_id: int,
    pan: str,
    first_name: str,
    last_name: str,
    date_of_birth: date,
    email: str,
    phone_number: str,
    monthly_income: int,
    requested_amount: int,
    loan_type: str,
    consent: bool,
    actor: Actor,
) -> LoanApplication:
    """Accept an application: encrypt the PAN, refuse a duplicate, write the row, its audit record and the
    `loan_application.submitted` event in one transaction.

    1. Re-check the invariants the API validated (a service may be called from elsewhere).
    2. Lock on (partner, PAN blind index) — see `_lock_pan` — then look for a duplicate: same partner,
       same PAN, still PENDING or created in the last 24 h → `DuplicateLoanApplication` (409).
    3. Choose the id first: it is the AES-GCM associated data of the PAN ciphertext.
    """
    _check_invariants(
        pan=pan,
        consent=consent,
        monthly_income=monthly_income,
        requested_amount=requested_amount,
        loan_type=loan_type,
    )
    ring = pan_crypto.key_ring()
    blind = pan_crypto.blind_index(pan, ring=ring)
    _lock_pan(partner_id=partner_id, pan_blind_index=blind)
    existing = loan_application_find_duplicate(partner_id=partner_id, pan_blind_index=blind)
    if existing is not None:
        raise DuplicateLoanApplication(existing.pk)

    application_id = uuid7()
    ciphertext, key_version = pan_crypto.encrypt_pan(pan, application_id=application_id, ring=ring)
    application = LoanApplication(
        id=application_id,
        partner_id=partner_id,
        pan_ciphertext=ciphertext,
        pan_key_version=key_version,
        pan_blind_index=blind,
        first_name=first_name,
        last_name=last_name,
        date_of_birth=date_of_birth,
        email=email,
        phone_number=phone_number,
        monthly_income=monthly_income,
        requested_amount=requested_amount,
        loan_type=loan_type,
        consent=True,
        status=LoanStatus.PENDING,
        created_at=timezone.now(),
    )
    insert_one(application)  # the ORM's INSERT without its per-call compilation (hot path, issue 15)
    audit_record(
        actor=actor,
        action=LoanAuditAction.SUBMITTED,
        object_type=OBJECT_TYPE,
        object_id=str(application.pk),
        after={
            "status": application.status,
            "loan_type": loan_type,
            "monthly_income": monthly_income,
            "requested_amount": requested_amount,
            "consent": True,
        },
    )
    outbox_enqueue_loan(topic=LoanTopic.SUBMITTED, application=application)
    return application


def outbox_enqueue_loan(*, topic: str, application: LoanApplication, extra: dict[str, Any] | None = None) -> None:
    from apps.outbox.services import outbox_enqueue

    payload: dict[str, Any] = {"application_id": str(application.pk), "partner_id": application.partner_id}
    payload.update(extra or {})
    outbox_enqueue(topic=topic, payload=payload, key=_message_key(application.pk))


# --- PAN access: every decrypt and every mask is in the PII access log --------------------------------


def pan_decrypt_for(*, application: LoanApplication, actor: Actor, purpose: str) -> str:
    """The plaintext PAN, for a caller that must send it somewhere (the bureau). Recorded before decrypting,
    so a failed attempt is on record too. Never store, log or return the result."""
    pii_access_record(
        actor=actor, subject_type=OBJECT_TYPE, subject_id=str(application.pk), field="pan", action=PiiAction.DECRYPT,
        purpose=purpose,
    )  # fmt: skip
    return pan_crypto.decrypt_pan(
        application.pan_ciphertext, key_version=application.pan_key_version, application_id=application.pk
    )


def pan_masked_for(*, application: LoanApplication, actor: Actor, purpose: str) -> str:
    """`XXXXX1234F`. Masking decrypts, so it is logged (action "mask")."""
    return pan_masked_many(applications=[application], actor=actor, purpose=purpose)[application.pk]


def pan_masked_many(*, applications: Iterable[LoanApplication], actor: Actor, purpose: str) -> dict[uuid.UUID, str]:
    """Masked PANs for a page of applications, one PII access record each."""
    masked: dict[uuid.UUID, str] = {}
    for application in applications:
        pii_access_record(
            actor=actor, subject_type=OBJECT_TYPE, subject_id=str(application.pk), field="pan", action=PiiAction.MASK,
            purpose=purpose,
        )  # fmt: skip
        try:
            plain = pan_crypto.decrypt_pan(
                application.pan_ciphertext, key_version=application.pan_key_version, application_id=application.pk
            )
        except pan_crypto.PanDecryptionError:
            masked[application.pk] = "XXXXX?????"  # shown, not raised: one bad row must not hide a page
            continue
        masked[application.pk] = pan_crypto.mask_pan(plain)
    return masked


# --- Scoring ------------------------------------------------------------------------------------------


def loan_application_score_record(*, application: LoanApplication, report: BureauReport, actor: Actor) -> bool:
    """Store the bureau's score and enqueue `loan_application.scored`. Must run in the caller's transaction
    (the consumer's inbox transaction). Returns False, changing nothing, if the application was scored or
    changed meanwhile (conditional UPDATE on `version`)."""
    if not transaction.get_connection().in_atomic_block:
        raise RuntimeError("loan_application_score_record must run inside a transaction")
    now = timezone.now()
    updated = LoanApplication.objects.filter(
        pk=application.pk, version=application.version, status=LoanStatus.PENDING, credit_score__isnull=True
    ).update(credit_score=report.score, scored_at=now, version=application.version + 1)
    if not updated:
        return False
    CreditReport.objects.create(
        application_id=application.pk, bureau=report.bureau, score=report.score, factors=report.factors, created_at=now
    )
    audit_record(
        actor=actor,
        action=LoanAuditAction.SCORED,
        object_type=OBJECT_TYPE,
        object_id=str(application.pk),
        before={"credit_score": None},
        after={"credit_score": report.score, "bureau": report.bureau},
    )
    application.credit_score, application.scored_at, application.version = report.score, now, application.version + 1
    outbox_enqueue_loan(topic=LoanTopic.SCORED, application=application)
    return True


# --- Decisions ------------------------------------------------------------------------------------------


def decided_payload(application: LoanApplication) -> dict[str, Any]:
    """The `loan_application.decided` event: what the partner webhook will carry. No PII."""
    return {
        "status": application.status,
        "credit_score": application.credit_score,
        "decision_reasons": list(application.decision_reasons),
        "max_approved_amount": (
            format_minor(application.max_approved_amount) if application.max_approved_amount is not None else None
        ),
        "rule_set_version": application.rule_set_version,
        "decided_at": application.decided_at.isoformat() if application.decided_at else None,
    }


@dataclass(frozen=True)
class _Decision:
    """What a decision writes, automated or manual (`_decision_write` writes it the one way)."""

    kind: DecisionKind
    from_status: LoanStatus
    status: str
    reasons: list[str]
    rule_set_version: str
    inputs: dict[str, Any]
    max_approved_amount: int | None  # paise
    note: str = ""


# long: the numbered steps every decision takes, in one order, in one transaction (ADR 0038); the body is
# ~45 lines, half of them the column values of the decision row.
def _decision_write(
    *,
    application: LoanApplication,
    decision: _Decision,
    actor: Actor,
    audit_action: str,
    audit_before: dict[str, Any],
    audit_after: Callable[[str], dict[str, Any]],
    metric_by: str,
) -> LoanDecision | None:
    """The steps every decision takes, in one order, in the caller's transaction:

    1. hash the inputs (`rules.inputs_sha256`, ADR 0038);
    2. `UPDATE … WHERE id AND version AND status = from_status` (optimistic lock, docs/adr/0010): None, writing
       nothing, if the row changed meanwhile;
    3. the `LoanDecision` row, the audit record (`audit_after(input_hash)`), the `loan_application.decided`
       outbox message, the metric and the partner event (SPEC §10).

    `application` is updated in memory to the committed state.
    """
    input_hash = inputs_sha256(decision.inputs)
    now = timezone.now()
    decided_by = actor.display[:160]
    old_version = application.version
    columns = {
        "status": decision.status,
        "decision_reasons": decision.reasons,
        "rule_set_version": decision.rule_set_version,
        "decision_input_hash": input_hash,
        "max_approved_amount": decision.max_approved_amount,
        "decided_at": now,
        "decided_by": decided_by,
        "version": old_version + 1,
    }
    if not LoanApplication.objects.filter(pk=application.pk, version=old_version, status=decision.from_status).update(
        **columns
    ):
        return None
    for name, value in columns.items():  # the in-memory row now matches the committed one
        setattr(application, name, value)
    row = LoanDecision.objects.create(
        application=application,
        kind=decision.kind,
        status=decision.status,
        reasons=decision.reasons,
        rule_set_version=decision.rule_set_version,
        inputs=decision.inputs,
        input_hash=input_hash,
        max_approved_amount=decision.max_approved_amount,
        note=decision.note,
        decided_by=decided_by,
        created_at=now,
    )
    audit_record(
        actor=actor,
        action=audit_action,
        object_type=OBJECT_TYPE,
        object_id=str(application.pk),
        before=audit_before,
        after=audit_after(input_hash),
    )
    outbox_enqueue_loan(topic=LoanTopic.DECIDED, application=application, extra=decided_payload(application))
    decision_committed(outcome=decision.status, by=metric_by)
    loan_decided_event_record(  # partner event (SPEC §10, issue 13)
        application_id=application.pk, partner_id=application.partner_id, decided=decided_payload(application)
    )
    return row


@transaction.atomic
def loan_application_decide(*, application_id: uuid.UUID, actor: Actor) -> LoanDecision | None:
    """Apply the automated rules to a scored, pending application.

    1. Read the application (no lock) and compute the outcome from its canonical inputs.
    2. `UPDATE … WHERE id = %s AND version = %s AND status = 'PENDING'`: of two concurrent attempts the
       second waits for the first's row lock, re-evaluates the WHERE against the committed row and matches
       nothing. It returns None and writes nothing; a step applied twice changes nothing.
    3. Only the winner writes the `LoanDecision`, the audit record and `loan_application.decided`
       (`_decision_write`).
    """
    application = LoanApplication.objects.filter(pk=application_id).first()
    if application is None or application.status != LoanStatus.PENDING or application.credit_score is None:
        return None
    inputs = DecisionInputs(
        credit_score=application.credit_score,
        monthly_income=application.monthly_income,
        requested_amount=application.requested_amount,
        loan_type=application.loan_type,
    )
    outcome = decide(inputs)
    return _decision_write(
        application=application,
        decision=_Decision(
            kind=DecisionKind.AUTOMATED,
            from_status=LoanStatus.PENDING,
            status=outcome.status,
            reasons=outcome.reasons,
            rule_set_version=inputs.rule_set_version,
            inputs=inputs.canonical(),
            max_approved_amount=outcome.max_approved_amount,
        ),
        actor=actor,
        audit_action=LoanAuditAction.DECIDED,
        audit_before={"status": LoanStatus.PENDING},
        audit_after=lambda input_hash: {
            "status": outcome.status,
            "decision_reasons": outcome.reasons,
            "max_approved_amount": outcome.max_approved_amount,
            "rule_set_version": inputs.rule_set_version,
            "decision_input_hash": input_hash,
        },
        metric_by="rules",
    )


@transaction.atomic
def loan_application_decide_manually(
    *, application: LoanApplication, approve: bool, reason: str, actor: Actor
) -> LoanDecision:
    """An operator approves (→ PRE_APPROVED) or declines (→ REJECTED) a MANUAL_REVIEW application.

    Optimistic-locked like the automated step: if the application changed since the operator loaded it
    (another operator decided it), this raises `Conflict` and writes nothing. The inputs hashed are the
    automated inputs plus `operator_decision` and `previous_status` (ADR 0038).
    """
    reason = reason.strip()
    if not reason:
        raise DomainValidationError({"reason": "Give a reason for the decision."})
    current = LoanApplication.objects.filter(pk=application.pk).first()
    if current is None or current.status != LoanStatus.MANUAL_REVIEW:
        raise Conflict("Only applications in MANUAL_REVIEW can be decided by an operator.", slug="not-in-review")
    if current.version != application.version:
        raise Conflict("The application changed since it was loaded; reload and try again.", slug="stale-version")
    status = LoanStatus.PRE_APPROVED if approve else LoanStatus.REJECTED
    code = ReasonCode.MANUAL_APPROVED if approve else ReasonCode.MANUAL_DECLINED
    max_amount = current.max_approved_amount if approve else None
    if approve and max_amount is None:
        # MANUAL_REVIEW implies a passing score, so the automated step set it; recompute defensively.
        max_amount = current.monthly_income * INCOME_MULTIPLE
    inputs = {
        **(
            DecisionInputs(
                credit_score=current.credit_score or 0,
                monthly_income=current.monthly_income,
                requested_amount=current.requested_amount,
                loan_type=current.loan_type,
                rule_set_version=current.rule_set_version or RULE_SET_VERSION,
            ).canonical()
        ),
        "operator_decision": "APPROVE" if approve else "DECLINE",
        "previous_status": LoanStatus.MANUAL_REVIEW.value,
    }
    decision = _decision_write(
        application=current,
        decision=_Decision(
            kind=DecisionKind.MANUAL,
            from_status=LoanStatus.MANUAL_REVIEW,
            status=status,
            reasons=[*current.decision_reasons, code.value],
            # Unchanged: an operator's decision keeps the rule set the automated step recorded.
            rule_set_version=current.rule_set_version,
            inputs=inputs,
            max_approved_amount=max_amount,
            note=reason[:2000],
        ),
        actor=actor,
        audit_action=LoanAuditAction.DECIDED_MANUALLY,
        audit_before={"status": LoanStatus.MANUAL_REVIEW, "max_approved_amount": application.max_approved_amount},
        audit_after=lambda _hash: {"status": status, "max_approved_amount": max_amount, "reason": reason[:500]},
        metric_by="operator",
    )
    if decision is None:
        raise Conflict("The application changed since it was loaded; reload and try again.", slug="stale-version")
    application.refresh_from_db()
    return decision


# --- Key rotation -------------------------------------------------------------------------------------


@dataclass
class RotationBatch:
    rotated: int = 0
    failed_ids: list[uuid.UUID] = field(default_factory=list)


def pan_rotation_remaining(*, exclude_ids: Iterable[uuid.UUID] = ()) -> int:
    active = pan_crypto.key_ring().active_version
    return LoanApplication.objects.exclude(pan_key_version=active).exclude(pk__in=list(exclude_ids)).count()


@transaction.atomic
def pan_key_rotate_batch(*, batch_size: int, actor: Actor, exclude_ids: Iterable[uuid.UUID] = ()) -> RotationBatch:
    """Re-encrypt up to `batch_size` PANs that are not under the active key version.

    1. Claim rows with `FOR UPDATE SKIP LOCKED` (several rotators, or a rotator and live traffic, never
       wait on each other and never rotate one row twice).
    2. For each: record the decrypt in the PII log, decrypt under its version, encrypt under the active one
       with a fresh nonce, write it with `WHERE pan_key_version = <old>`. The blind index is unchanged (it
       has its own key), so duplicate detection keeps working throughout.
    3. A row that does not decrypt is reported in `failed_ids` and skipped (the caller excludes it from
       later batches); the batch commits the others.
    """
    ring = pan_crypto.key_ring()
    rows = list(
        LoanApplication.objects.exclude(pan_key_version=ring.active_version)
        .exclude(pk__in=list(exclude_ids))
        .order_by("pk")
        .select_for_update(skip_locked=True)
        .only("id", "pan_ciphertext", "pan_key_version")[:batch_size]
    )
    result = RotationBatch()
    for row in rows:
        pii_access_record(
            actor=actor, subject_type=OBJECT_TYPE, subject_id=str(row.pk), field="pan", action=PiiAction.DECRYPT,
            purpose=f"PAN key rotation to version {ring.active_version}",
        )  # fmt: skip
        try:
            plain = pan_crypto.decrypt_pan(
                row.pan_ciphertext, key_version=row.pan_key_version, application_id=row.pk, ring=ring
            )
        except pan_crypto.PanDecryptionError:
            result.failed_ids.append(row.pk)
            continue
        ciphertext, version = pan_crypto.encrypt_pan(plain, application_id=row.pk, ring=ring)
        result.rotated += LoanApplication.objects.filter(pk=row.pk, pan_key_version=row.pan_key_version).update(
            pan_ciphertext=ciphertext, pan_key_version=version
        )
    if result.rotated:
        audit_record(
            actor=actor,
            action=LoanAuditAction.PAN_KEY_ROTATED,
            object_type="pan_key",
            object_id=str(ring.active_version),
            after={"rotated": result.rotated, "failed": len(result.failed_ids)},
        )
    return result
