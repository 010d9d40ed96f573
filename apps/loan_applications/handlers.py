"""Outbox consumers of the loan flow (autodiscovered): scoring, decision, and the decided-event placeholder.

    loan_application.submitted ──(queue "scoring")──▶ bureau soft pull, store score ──▶ loan_application.scored
    loan_application.scored ──(queue "decisions")──▶ rules ──▶ loan_application.decided ──(queue "webhooks")

Every consumer is idempotent twice over: the inbox records (consumer, message) in the transaction of its
writes, and each write is a conditional UPDATE on the application's `version`/status.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Iterator

from django.db import transaction

from apps.common.actors import Actor
from apps.loan_applications import services
from apps.loan_applications.bureau import (
    BureauRequest,
    BureauUnavailable,
    CreditBureau,
    default_bureau,
    soft_pull_with_retries,
)
from apps.loan_applications.contracts import LoanTopic
from apps.loan_applications.models import LoanApplication, LoanStatus
from apps.outbox.contracts import Message
from apps.outbox.inbox import inbox_consume, inbox_seen
from apps.outbox.registry import consumer
from apps.outbox.services import RetryLater

log = logging.getLogger(__name__)

SCORING_ACTOR = "loan_applications.scoring"
DECISION_ACTOR = "loan_applications.decision"


@contextlib.contextmanager
def _plain_transaction() -> Iterator[bool]:
    with transaction.atomic():
        yield True


def scoring_step(
    *, application_id: uuid.UUID, message: Message | None = None, bureau: CreditBureau | None = None
) -> bool:
    """Score one application. Returns True if this call stored the score.

    1. Skip an application that is gone, decided or already scored, and a message the inbox has seen.
    2. Decrypt the PAN (recorded in the PII access log) and call the bureau — OUTSIDE any transaction,
       through the circuit breaker, with bounded retries.
    3. In one transaction (the inbox's when driven by a message): inbox row, conditional UPDATE of the
       score on `version`, credit report, audit record, `loan_application.scored`.
    """
    actor = Actor.system(SCORING_ACTOR)
    application = LoanApplication.objects.filter(pk=application_id).first()
    if application is None or application.status != LoanStatus.PENDING or application.credit_score is not None:
        return False
    if message is not None and inbox_seen(message):
        return False
    request = BureauRequest(
        application_id=application.pk,
        pan=services.pan_decrypt_for(application=application, actor=actor, purpose="credit bureau soft pull"),
        first_name=application.first_name,
        last_name=application.last_name,
        date_of_birth=application.date_of_birth,
        monthly_income=application.monthly_income,
        loan_type=application.loan_type,
    )
    report = soft_pull_with_retries(request, bureau=bureau or default_bureau())
    del request
    with inbox_consume(message) if message is not None else _plain_transaction() as first:
        if not first:
            return False
        return services.loan_application_score_record(application=application, report=report, actor=actor)


def decision_step(*, application_id: uuid.UUID, message: Message | None = None) -> bool:
    """Decide one scored application. Returns True if this call made the decision."""
    actor = Actor.system(DECISION_ACTOR)
    with inbox_consume(message) if message is not None else _plain_transaction() as first:
        if not first:
            return False
        return services.loan_application_decide(application_id=application_id, actor=actor) is not None


@consumer(LoanTopic.SUBMITTED, queue="scoring")
def handle_submitted(message: Message) -> None:
    try:
        scoring_step(application_id=uuid.UUID(message.payload["application_id"]), message=message)
    except BureauUnavailable as exc:
        raise RetryLater(str(exc), delay_seconds=exc.retry_after) from exc


@consumer(LoanTopic.SCORED, queue="decisions")
def handle_scored(message: Message) -> None:
    decision_step(application_id=uuid.UUID(message.payload["application_id"]), message=message)


@consumer(LoanTopic.DECIDED, queue="webhooks")
def handle_decided(message: Message) -> None:
    """Placeholder until partner webhooks (SPEC §10) exist: the outbox needs a consumer per topic.

    It only logs the outcome (no PII). The webhooks feature replaces this consumer with the delivery of the
    `loan_application.decided` partner webhook; the payload already carries partner_id and the outcome.
    """
    with inbox_consume(message) as first:
        if first:
            log.info(
                "loan_application.decided",
                extra={
                    "application_id": message.payload.get("application_id"),
                    "status": message.payload.get("status"),
                },
            )
