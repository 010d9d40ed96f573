"""Outbox consumers of the endorsement pipeline. Each is idempotent: its writes and its inbox row commit
together; the insurer is called outside any transaction, with the endorsement's own idempotency key."""

from __future__ import annotations

from apps.common.actors import Actor
from apps.endorsements import services
from apps.endorsements.contracts import EndorsementTopic
from apps.endorsements.dispatch import send_budget_spent, send_max_attempts, submissions_for
from apps.insurers.contracts import (
    InsurerCallDeferred,
    InsurerConfigurationError,
    InsurerTopic,
    RejectionClass,
    TransientInsurerError,
)
from apps.insurers.services import insurer_submit
from apps.ledger.contracts import LedgerTopic
from apps.outbox.contracts import Message
from apps.outbox.inbox import inbox_consume, inbox_seen
from apps.outbox.registry import consumer
from apps.outbox.services import Defer, RetryLater


@consumer(EndorsementTopic.PROCESS, queue="endorsements")
def handle_process(message: Message) -> None:
    with inbox_consume(message) as first:
        if first:
            services.endorsements_process(ids=message.payload["ids"], actor=Actor.system("endorsements.process"))


@consumer(EndorsementTopic.DISPATCH, queue="insurers")
def handle_dispatch(message: Message) -> None:
    """Send one batch to its insurer; apply the answers, defer, retry with backoff, or fail after the budget.

    1. Already applied (inbox) → nothing. No endorsement of the batch still SENT → consume and stop.
    2. Call the insurer, outside any transaction, with each endorsement's own idempotency key.
    3. Our breaker is open (or its half-open probes are taken) or our outbound rate limit is spent: nothing
       was sent → `Defer` until it may be tried again; no attempt of the budget is spent (ADR 0025).
    4. The insurer failed transiently (timeout, 5xx, 429, file not writable): one history row per endorsement
       for this round (`endorsements_note_send_retry`), then retry with backoff (at least its Retry-After),
       unless the budget — ENDORSEMENT_SEND_MAX_ATTEMPTS failed calls or ENDORSEMENT_SEND_MAX_HOURS since the
       batch was sent — is spent: then FAILED, holds released, in one transaction with the inbox row.
    5. Keel cannot send (no adapter, no such insurer, bad configuration or credentials): FAILED at once with
       class `configuration` and the reason (retrying cannot help; ADR 0029).
    6. Answers → `results_apply` with the inbox row, in one transaction.
    """
    if inbox_seen(message):
        return
    actor = Actor.system("endorsements.dispatch")
    submissions = submissions_for(ids=message.payload["ids"])
    if not submissions:
        with inbox_consume(message):
            return
    try:
        results = insurer_submit(insurer_code=message.payload["insurer_code"], submissions=submissions)
    except InsurerCallDeferred as exc:
        raise Defer(str(exc), delay_seconds=exc.retry_after or 1.0) from exc
    except TransientInsurerError as exc:
        spent = send_budget_spent(failed_attempts=message.attempt + 1, first_sent_at=message.created_at)
        if spent:
            with inbox_consume(message) as first:
                if first:
                    services.endorsements_fail(
                        ids=[s.endorsement_id for s in submissions], reason=f"{exc} ({spent})", actor=actor
                    )
            return
        services.endorsements_note_send_retry(
            ids=[s.endorsement_id for s in submissions], attempt=message.attempt + 1, reason=str(exc), actor=actor
        )
        raise RetryLater(str(exc), min_delay_seconds=exc.retry_after, max_attempts=send_max_attempts() + 1) from exc
    except InsurerConfigurationError as exc:
        # Retrying cannot help (no adapter, no such insurer, bad or missing configuration or credentials):
        # fail now with class `configuration` and the reason, release holds (SPEC §8).
        with inbox_consume(message) as first:
            if first:
                services.endorsements_fail(
                    ids=[s.endorsement_id for s in submissions],
                    reason=str(exc),
                    actor=actor,
                    rejection_class=RejectionClass.CONFIGURATION,
                )
        return
    outcomes = [
        services.InsurerOutcome(r.endorsement_id, r.outcome, r.insurer_reference, r.rejection_class, r.rejection_reason)
        for r in results
    ]
    with inbox_consume(message) as first:
        if first:
            services.results_apply(outcomes=outcomes, actor=actor)


@consumer(InsurerTopic.RESULT_RECEIVED, queue="endorsements")
def handle_insurer_result(message: Message) -> None:
    """An insurer's asynchronous answer (signed callback or result file)."""
    p = message.payload
    with inbox_consume(message) as first:
        if first:
            services.results_apply(
                outcomes=[
                    services.InsurerOutcome(
                        p["endorsement_id"],
                        p["outcome"],
                        p.get("insurer_reference"),
                        p.get("rejection_class"),
                        p.get("rejection_reason"),
                    )
                ],
                actor=Actor.system("insurer.callback"),
                source="callback",
            )


@consumer(InsurerTopic.RESULTS_RECEIVED, queue="endorsements")
def handle_insurer_results(message: Message) -> None:
    """A chunk of an insurer's results (a result file's rows), applied in one transaction."""
    with inbox_consume(message) as first:
        if first:
            services.results_apply(
                outcomes=[
                    services.InsurerOutcome(
                        r["endorsement_id"],
                        r["outcome"],
                        r.get("insurer_reference"),
                        r.get("rejection_class"),
                        r.get("rejection_reason"),
                    )
                    for r in message.payload["results"]
                ],
                actor=Actor.system("insurer.result_file"),
                source="result_file",
            )


@consumer(LedgerTopic.FUNDS_AVAILABLE, queue="endorsements")
def handle_funds_available(message: Message) -> None:
    with inbox_consume(message) as first:
        if first:
            services.endorsements_wake_parked(
                employer_id=message.payload["employer_id"], actor=Actor.system("ledger.funds_available")
            )
