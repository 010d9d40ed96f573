"""Sending endorsements to insurers, and receiving their callbacks.

`insurer_submit` is the one place Keel talks to an insurer: it does network I/O and must be called outside
any transaction (the endorsements app calls it from an outbox consumer). Retrying is the caller's job: on
`TransientInsurerError` it reschedules the same submissions (same idempotency keys) through the outbox, with
backoff and jitter honouring `retry_after`, and fails them after its retry budget (ADR 0011).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog
from django.db import IntegrityError, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from apps.audit.services import audit_record
from apps.common import bulk
from apps.common.actors import Actor
from apps.insurers.callback_secrets import callback_secret_seal
from apps.insurers.classification import classify_insurer_error
from apps.insurers.conflicts import contradicts, decided_states, insurer_conflict_record
from apps.insurers.contracts import (
    DecidedState,
    EndorsementSubmission,
    InsurerAuditAction,
    InsurerTopic,
    SubmissionResult,
    TransientInsurerError,
    UnknownInsurerError,
)
from apps.insurers.credentials import decrypt_credentials, encrypt_credentials
from apps.insurers.gateways import gateway_for
from apps.insurers.models import CallbackEvent, Insurer, InsurerSubmission, SandboxConfig, SubmissionState
from apps.insurers.resilience import circuit_state, guarded_call, rate_limit_acquire
from apps.outbox.services import outbox_enqueue

__all__ = [
    "CallbackItem",
    "classify_insurer_error",
    "insurer_callback_receive",
    "insurer_circuit_state",
    "insurer_credentials_set",
    "insurer_submit",
]

log = structlog.get_logger(__name__)
FINAL_STATES = (SubmissionState.CONFIRMED, SubmissionState.REJECTED)


def insurer_submit(*, insurer_code: str, submissions: Sequence[EndorsementSubmission]) -> list[SubmissionResult]:
    """Send endorsements to an insurer; one result per submission, in order.

    1. Split into chunks of the insurer's `batch_size`; for each chunk:
    2. take a token from the insurer's shared rate limit (else `TransientInsurerError`, nothing sent);
    3. through the insurer's circuit breaker (open → `TransientInsurerError` at once, nothing sent):
       record the submissions as sent (our `InsurerSubmission` log, so callbacks can find them), then
       send them with the insurer's gateway (which logs the exchange);
    4. record each result (a `pending` never overwrites a result a callback already delivered).

    A chunk that fails transiently raises after earlier chunks were sent; the caller retries all of them
    with the same keys and the insurer answers the earlier ones from its idempotency store.
    """
    assert not transaction.get_connection().in_atomic_block, (
        "insurer_submit does network I/O: call it outside a transaction"
    )
    if not submissions:
        return []
    try:
        insurer = Insurer.objects.get(code=insurer_code)
    except Insurer.DoesNotExist:
        raise UnknownInsurerError(f"no insurer with code {insurer_code!r}") from None
    gateway = gateway_for(insurer)
    size = max(int(insurer.batch_size), 1)
    results: list[SubmissionResult] = []
    for start in range(0, len(submissions), size):
        chunk = list(submissions[start : start + size])
        rate_limit_acquire(insurer_code=insurer.code, per_minute=insurer.rate_limit_per_minute)

        def attempt(chunk: list[EndorsementSubmission] = chunk) -> list[SubmissionResult]:
            _record_sent(insurer, chunk)
            return gateway.submit(chunk)

        try:
            chunk_results: list[SubmissionResult] = guarded_call(insurer.code, attempt)
        except TransientInsurerError as exc:
            _record_transient(chunk, str(exc))
            log.info("insurers.submit_transient", insurer=insurer.code, count=len(chunk), retry_after=exc.retry_after)
            raise
        if len(chunk_results) != len(chunk):
            raise RuntimeError(f"gateway returned {len(chunk_results)} results for {len(chunk)} submissions")
        _record_results(chunk, chunk_results)
        results.extend(chunk_results)
    return results


def _record_sent(insurer: Insurer, chunk: Sequence[EndorsementSubmission]) -> None:
    now = timezone.now()
    InsurerSubmission.objects.bulk_create(
        [
            InsurerSubmission(
                insurer=insurer,
                endorsement_id=s.endorsement_id,
                idempotency_key=s.idempotency_key,
                kind=s.kind,
                first_sent_at=now,
                sent_at=now,
            )
            for s in chunk
        ],
        ignore_conflicts=True,
    )
    InsurerSubmission.objects.filter(idempotency_key__in=[s.idempotency_key for s in chunk]).update(
        sent_at=now,
        attempts=F("attempts") + 1,
        last_outcome=Case(
            When(last_outcome__in=FINAL_STATES, then=F("last_outcome")), default=Value(SubmissionState.SENT)
        ),
    )


def _record_transient(chunk: Sequence[EndorsementSubmission], error: str) -> None:
    InsurerSubmission.objects.filter(
        idempotency_key__in=[s.idempotency_key for s in chunk], last_outcome=SubmissionState.SENT
    ).update(last_outcome=SubmissionState.TRANSIENT_ERROR, last_error=error[:500])


@transaction.atomic
def _record_results(chunk: Sequence[EndorsementSubmission], results: Sequence[SubmissionResult]) -> None:
    """Our submission log takes each answer, except one that contradicts a state Keel already decided (a
    callback was faster and Keel moved on): that is recorded as an `InsurerConflict` and overwrites nothing
    (issue 8, kind 11). The endorsements app sees the same answer under its row lock and leaves it alone."""
    rows = InsurerSubmission.objects.in_bulk([s.idempotency_key for s in chunk], field_name="idempotency_key")
    states = decided_states([s.endorsement_id for s in chunk])
    now = timezone.now()
    changed: list[InsurerSubmission] = []
    for submission, result in zip(chunk, results, strict=True):
        row = rows.get(submission.idempotency_key)
        if row is None:
            continue
        state = states.get(submission.endorsement_id)
        if result.outcome != "pending" and state is not None and contradicts(result.outcome, state):
            insurer_conflict_record(
                insurer_id=row.insurer_id,
                endorsement_id=submission.endorsement_id,
                source="gateway",
                outcome=result.outcome,
                keel_status=state.status,
                insurer_reference=result.insurer_reference or "",
                rejection_class=result.rejection_class or "",
                rejection_reason=result.rejection_reason or "",
                now=now,
            )
            continue
        if result.outcome == "pending":
            if row.last_outcome in FINAL_STATES:
                continue  # the callback was faster than our own bookkeeping
            row.last_outcome = SubmissionState.PENDING
        else:
            row.last_outcome = SubmissionState(result.outcome)
            row.rejection_class = result.rejection_class or ""
            row.rejection_reason = (result.rejection_reason or "")[:500]
        row.insurer_reference = (result.insurer_reference or row.insurer_reference)[:120]
        row.responded_at = now
        row.last_error = ""
        changed.append(row)
    bulk.bulk_update(
        changed,
        ["last_outcome", "rejection_class", "rejection_reason", "insurer_reference", "responded_at", "last_error"],
    )


def insurer_circuit_state(insurer_code: str) -> dict[str, Any]:
    """{state: closed|open|half_open, failure_count, opened_at (datetime or None)}."""
    return circuit_state(insurer_code)


# --- Callbacks ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallbackItem:
    """One verified, well-formed event of an insurer callback."""

    event_type: str  # endorsement.confirmed | endorsement.rejected
    idempotency_key: str | None
    endorsement_id: int | None
    insurer_reference: str
    reason: str
    # False when the item's id or key cannot name any endorsement (out of range, wrong type): 404 for it.
    resolvable: bool = True


def _find_submissions(
    insurer: Insurer, items: Sequence[CallbackItem]
) -> tuple[dict[str, InsurerSubmission], dict[int, InsurerSubmission]]:
    keys = [i.idempotency_key for i in items if i.resolvable and i.idempotency_key]
    ids = [i.endorsement_id for i in items if i.resolvable and not i.idempotency_key and i.endorsement_id is not None]
    by_key = {s.idempotency_key: s for s in InsurerSubmission.objects.filter(insurer=insurer, idempotency_key__in=keys)}
    by_id: dict[int, InsurerSubmission] = {}
    # The latest submission of an endorsement wins (an endorsement may have been sent under several keys).
    for row in InsurerSubmission.objects.filter(insurer=insurer, endorsement_id__in=ids).order_by("id"):
        by_id[row.endorsement_id] = row
    return by_key, by_id


def insurer_callback_receive(
    *, insurer: Insurer, webhook_id: str, items: Sequence[CallbackItem], received_at: datetime | None = None
) -> list[dict[str, Any]]:
    """Apply a verified insurer callback; returns one `{index, status, detail}` per item.

    One transaction for the whole callback. Per item:
    1. unknown endorsement (never sent to this insurer, or an id/key that cannot name one) → 404 for that item,
       nothing recorded;
    1b. a result that contradicts a state Keel already decided (rejected while CONFIRMED/ACTIVE, confirmed
       while FAILED/CANCELLED/REJECTED) → 409 for that item with the current state; nothing is overwritten,
       the conflict is recorded for operators (`apps.insurers.conflicts`; issue 8, kind 11);
    2. record a `CallbackEvent` in a savepoint; its unique (insurer, webhook_id, index) makes a redelivery
       of the same webhook fail the insert → 200 "already processed", nothing else written (two concurrent
       deliveries serialise on that index: the second waits for the first's commit, then sees the conflict);
    3. a result equal to the one already recorded (e.g. the synchronous answer) is acknowledged without a
       new event;
    4. otherwise update our submission log and enqueue `insurer.result_received` keyed by endorsement, in
       the same transaction, for the endorsements app.
    """
    now = received_at or timezone.now()
    with transaction.atomic():
        by_key, by_id = _find_submissions(insurer, items)
        states = decided_states({s.endorsement_id for s in (*by_key.values(), *by_id.values())})
        responses: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            submission = _submission_of(item, by_key, by_id)
            if submission is None:
                responses.append(
                    {"index": index, "status": 404, "detail": "No such endorsement was sent to this insurer."}
                )
                continue
            responses.append(
                _callback_item_apply(
                    insurer=insurer,
                    webhook_id=webhook_id,
                    index=index,
                    item=item,
                    submission=submission,
                    state=states.get(submission.endorsement_id),
                    now=now,
                )
            )
    return responses


def _submission_of(
    item: CallbackItem, by_key: dict[str, InsurerSubmission], by_id: dict[int, InsurerSubmission]
) -> InsurerSubmission | None:
    """Step 1: the submission an item names — by idempotency key when it has one, else by endorsement id (the
    latest submission); None if it names none sent to this insurer."""
    if not item.resolvable:
        return None
    if item.idempotency_key:
        return by_key.get(item.idempotency_key)
    if item.endorsement_id is not None:
        return by_id.get(item.endorsement_id)
    return None


@dataclass(frozen=True)
class _CallbackResult:
    """What one callback item says: `outcome` confirmed | rejected, the rejection class (empty if confirmed)
    and the reason (≤ 500 characters; a default for a rejection without one, empty if confirmed)."""

    outcome: str
    rejection_class: str
    reason: str

    @classmethod
    def of(cls, item: CallbackItem) -> _CallbackResult:
        outcome = "confirmed" if item.event_type == "endorsement.confirmed" else "rejected"
        rejected = outcome == "rejected"
        rejection_class = classify_insurer_error(item.reason).value if rejected else ""
        reason = (item.reason or ("Rejected by the insurer without a reason." if rejected else ""))[:500]
        return cls(outcome=outcome, rejection_class=rejection_class, reason=reason)


def _callback_item_apply(
    *,
    insurer: Insurer,
    webhook_id: str,
    index: int,
    item: CallbackItem,
    submission: InsurerSubmission,
    state: DecidedState | None,
    now: datetime,
) -> dict[str, Any]:
    """Steps 1b–4 of `insurer_callback_receive` for one item whose submission is known; its response."""
    result = _CallbackResult.of(item)
    outcome, rejection_class, reason = result.outcome, result.rejection_class, result.reason
    if state is not None and contradicts(outcome, state):
        response = _conflict_response(index, insurer, submission, item, outcome, rejection_class, state, now)
        _callback_event_once(insurer, webhook_id, index, submission, item, outcome, rejection_class, reason, now)
        return response
    already = submission.last_outcome == outcome and (
        not item.insurer_reference or submission.insurer_reference == item.insurer_reference
    )
    new = _callback_event_once(
        insurer, webhook_id, index, submission, item, outcome, rejection_class, reason, now, published=not already
    )
    if not new:
        return {"index": index, "status": 200, "detail": "Duplicate delivery; already processed."}
    if already:
        return {"index": index, "status": 200, "detail": "Result already recorded."}
    _submission_result_publish(insurer=insurer, submission=submission, item=item, result=result, now=now)
    return {"index": index, "status": 200, "detail": f"Endorsement {outcome}."}


def _submission_result_publish(
    *, insurer: Insurer, submission: InsurerSubmission, item: CallbackItem, result: _CallbackResult, now: datetime
) -> None:
    """Step 4: update the submission log and enqueue `insurer.result_received` (keyed by endorsement) in the
    caller's transaction, for the endorsements app."""
    rejected = result.outcome == "rejected"
    submission.last_outcome = SubmissionState(result.outcome)
    submission.insurer_reference = item.insurer_reference[:120] or submission.insurer_reference
    submission.rejection_class = result.rejection_class
    submission.rejection_reason = result.reason if rejected else ""
    submission.responded_at = now
    submission.save(
        update_fields=["last_outcome", "insurer_reference", "rejection_class", "rejection_reason", "responded_at"]
    )
    outbox_enqueue(
        topic=InsurerTopic.RESULT_RECEIVED,
        payload={
            "endorsement_id": submission.endorsement_id,
            "outcome": result.outcome,
            "insurer_reference": submission.insurer_reference or None,
            "rejection_class": result.rejection_class or None,
            "rejection_reason": result.reason if rejected else None,
            "insurer": insurer.code,
            "idempotency_key": submission.idempotency_key,
        },
        key=f"endorsement:{submission.endorsement_id}",
    )


def _conflict_response(
    index: int,
    insurer: Insurer,
    submission: InsurerSubmission,
    item: CallbackItem,
    outcome: str,
    rejection_class: str,
    state: DecidedState,
    now: datetime,
) -> dict[str, Any]:
    conflict = insurer_conflict_record(
        insurer_id=insurer.pk,
        endorsement_id=submission.endorsement_id,
        source="callback",
        outcome=outcome,
        keel_status=state.status,
        insurer_reference=item.insurer_reference,
        rejection_class=rejection_class,
        rejection_reason=item.reason,
        now=now,
    )
    return {
        "index": index,
        "status": 409,
        "detail": (
            f"The endorsement is {state.status}: this {outcome} result contradicts it and was not applied. "
            f"Recorded as insurer conflict {conflict.pk} for an operator."
        ),
        "endorsement_status": state.status,
        "conflict_id": conflict.pk,
    }


def _callback_event_once(
    insurer: Insurer,
    webhook_id: str,
    index: int,
    submission: InsurerSubmission,
    item: CallbackItem,
    outcome: str,
    rejection_class: str,
    reason: str,
    now: datetime,
    *,
    published: bool = False,
) -> bool:
    """Record one delivered callback item once per (insurer, webhook-id, index); True if it is new.

    A redelivery hits the unique constraint and adds nothing (False). Conflicting items are kept unpublished."""
    try:
        with transaction.atomic():
            CallbackEvent.objects.create(
                insurer=insurer,
                webhook_id=webhook_id,
                item_index=index,
                submission=submission,
                event_type=item.event_type,
                outcome=outcome,
                insurer_reference=item.insurer_reference[:120],
                rejection_class=rejection_class,
                rejection_reason=reason,
                published=published,
                received_at=now,
            )
    except IntegrityError:
        return False
    return True


@transaction.atomic
def insurer_credentials_set(*, insurer: Insurer, values: dict[str, Any], actor: Actor) -> None:
    """Replace an insurer's credentials (a JSON object of strings; {} clears them), encrypted at rest
    (ADR 0029). Audited with the credential *names* only, never their values."""
    before = sorted(decrypt_credentials(insurer.credentials, insurer_code=insurer.code)) if insurer.credentials else []
    insurer.credentials = encrypt_credentials(values, insurer_code=insurer.code)
    Insurer.objects.filter(pk=insurer.pk).update(credentials=insurer.credentials)
    audit_record(
        actor=actor,
        action=InsurerAuditAction.CREDENTIALS_SET,
        object_type="insurer",
        object_id=insurer.pk,
        before={"credential_names": before},
        after={"credential_names": sorted(values)},
    )


@transaction.atomic
def insurer_callback_secret_set(*, insurer: Insurer, plaintext: str, actor: Actor) -> None:
    """Replace an insurer's callback signing secret (`plaintext`: a `whsec_…` Standard Webhooks secret; ""
    clears it), sealed at rest (ADR 0044). When the built-in sandbox insurer of the same code exists, it signs
    with the new secret too. Audited as `callback_secret_state` set/replaced/cleared, never with any form of the
    secret."""
    had = bool(insurer.callback_secret)
    insurer.callback_secret = callback_secret_seal(plaintext, insurer_code=insurer.code)
    Insurer.objects.filter(pk=insurer.pk).update(callback_secret=insurer.callback_secret)
    SandboxConfig.objects.filter(code=insurer.code).update(
        callback_secret=callback_secret_seal(plaintext, insurer_code=insurer.code, owner="sandbox"),
        updated_at=timezone.now(),
    )
    audit_record(
        actor=actor,
        action=InsurerAuditAction.CALLBACK_SECRET_SET,
        object_type="insurer",
        object_id=insurer.pk,
        before={"callback_secret_state": "set" if had else "none"},
        after={"callback_secret_state": ("replaced" if had else "set") if plaintext else "cleared"},
    )
