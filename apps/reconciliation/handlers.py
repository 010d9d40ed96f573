"""Consumers of reconciliation's outbox topics (autodiscovered by the outbox)."""

from __future__ import annotations

from datetime import date

import structlog
from django.utils import timezone

from apps.insurers.contracts import EndorsementSubmission, MemberData
from apps.insurers.services import insurer_submit
from apps.outbox.contracts import Message
from apps.outbox.inbox import inbox_consume, inbox_seen
from apps.outbox.registry import consumer
from apps.reconciliation.contracts import TOPIC_RESEND, TOPIC_RUN_REQUESTED, ResolutionAction
from apps.reconciliation.models import Discrepancy, DiscrepancyKind
from apps.reconciliation.selectors import keel_member_for_resend
from apps.reconciliation.services import resend_idempotency_key
from apps.reconciliation.tasks import QUEUE, reconciliation_run

log = structlog.get_logger(__name__)


@consumer(TOPIC_RUN_REQUESTED, queue="reconciliation")
def run_requested(message: Message) -> None:
    """Queue a started or resumed run's Celery task (`reconciliation.run`, which runs or resumes it to its end)
    for the attempt the payload names (`{"run_id", "attempt"}`; 0 for the first, absent in rows written before
    ADR 0061). Written with the run by `reconciliation_start`, and by the abandoned-run sweep for each resume,
    so a run is queued once the relay reaches the broker, whenever that is. A redelivery after a crash between
    the queueing and the inbox commit queues it again (ADR 0058: a run that has ended, or has been resumed for a
    later attempt, returns at once)."""
    if inbox_seen(message):
        with inbox_consume(message):
            return
    attempt = message.payload.get("attempt")
    args = (int(message.payload["run_id"]),) + (() if attempt is None else (int(attempt),))
    reconciliation_run.apply_async(args=args, queue=QUEUE)
    with inbox_consume(message):
        pass


@consumer(TOPIC_RESEND, queue="reconciliation")
def resend_to_insurer(message: Message) -> None:
    """Send Keel's current record of a member to the insurer again (`resend`), or a deletion of the insurer's
    member (`request_insurer_deletion`) (ADR 0040).

    1. `inbox_seen`: a redelivery of a handled message sends nothing.
    2. Build the item (`_submission`); for a resend, Keel's active cover — none left (ended since) → record
       the outcome and send nothing.
    3. Outside any transaction, submit it with the resolution's idempotency key (the insurer applies it
       once): an addition for a member the insurer lacks, a correction carrying Keel's values for a field
       mismatch, a deletion of a member only the insurer has; endorsement id 0 (no Keel endorsement exists)
       and no premium (ADR 0057: Keel already charged for the cover it holds). A transient insurer error
       raises, and the outbox retries with backoff.
    4. Store the insurer's outcome on the discrepancy and mark the message consumed, in one transaction. A
       `pending` outcome stays pending: the insurer's later answer shows in the next run's roster.
    """
    if inbox_seen(message):
        with inbox_consume(message):
            return
    discrepancy = (
        Discrepancy.objects.select_related("policy", "run__insurer")
        .filter(pk=int(message.payload["discrepancy_id"]))
        .first()
    )
    outcome: dict[str, object]
    submission = None if discrepancy is None else _submission(discrepancy)
    if discrepancy is None or submission is None:
        outcome = {"resend_outcome": "skipped", "reason": "Keel no longer covers this member"}
    else:
        (result,) = insurer_submit(insurer_code=discrepancy.run.insurer.code, submissions=[submission])
        outcome = {"resend_outcome": result.outcome, "insurer_reference": result.insurer_reference or ""}
        if result.rejection_reason:
            outcome["reason"] = result.rejection_reason
        log.info("reconciliation.resent", discrepancy_id=discrepancy.pk, outcome=result.outcome)
    with inbox_consume(message) as first:
        if first and discrepancy is not None:
            merged = {**discrepancy.resolution_result, **outcome}
            Discrepancy.objects.filter(pk=discrepancy.pk).update(resolution_result=merged)


def _submission(discrepancy: Discrepancy) -> EndorsementSubmission | None:
    """What to send: a deletion of the insurer's member (`request_insurer_deletion`), else Keel's member as an
    addition (missing at the insurer) or a correction (field mismatch); None if Keel no longer covers it."""
    key = resend_idempotency_key(discrepancy.pk)
    if discrepancy.resolution_action == ResolutionAction.REQUEST_INSURER_DELETION:
        theirs = dict(discrepancy.insurer_value or {})
        return EndorsementSubmission(
            endorsement_id=0,
            idempotency_key=key,
            kind="deletion",
            policy_number=discrepancy.policy.policy_number,
            effective_date=timezone.localdate(),
            member=MemberData(
                employee_code=discrepancy.employee_code,
                first_name=str(theirs.get("first_name") or ""),
                last_name=str(theirs.get("last_name") or ""),
                # A deletion is matched on the code; a roster without a birth date sends a placeholder.
                date_of_birth=date.fromisoformat(theirs.get("date_of_birth") or "1900-01-01"),
                gender="",
                email="",
            ),
            sum_insured=int(theirs.get("sum_insured") or 0),
            premium_amount=0,
            premium_direction="none",
        )
    found = keel_member_for_resend(policy_id=discrepancy.policy_id, employee_code=discrepancy.employee_code)
    if found is None:
        return None
    record, gender, email = found
    # Both columns are NOT NULL in Keel; the record type allows None for the insurer's side.
    assert record.date_of_birth is not None
    assert record.start_date is not None
    addition = discrepancy.kind == DiscrepancyKind.MISSING_AT_INSURER
    return EndorsementSubmission(
        endorsement_id=0,
        idempotency_key=key,
        kind="addition" if addition else "correction",
        policy_number=discrepancy.policy.policy_number,
        effective_date=record.start_date if addition else timezone.localdate(),
        member=MemberData(
            employee_code=record.employee_code,
            first_name=record.first_name,
            last_name=record.last_name,
            date_of_birth=record.date_of_birth,
            gender=gender,
            email=email,
        ),
        sum_insured=record.sum_insured,
        premium_amount=0,
        premium_direction="none",
    )
