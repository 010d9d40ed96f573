"""Consumers of ledger events (autodiscovered by the outbox).

`ledger.funds_available` is consumed by the endorsements app (park and wake), not here.
"""

from __future__ import annotations

import logging

from django.core.mail import send_mail

from apps.common.money import format_minor
from apps.employers.selectors import employer_contact
from apps.ledger.contracts import LedgerTopic
from apps.outbox.contracts import Message
from apps.outbox.inbox import inbox_consume, inbox_seen
from apps.outbox.registry import consumer

log = logging.getLogger(__name__)


@consumer(LedgerTopic.LOW_BALANCE, queue="ledger")
def low_balance_notify(message: Message) -> None:
    """E-mail the employer's contact that `available` crossed below its low-balance threshold.

    1. `inbox_seen` pre-check: a redelivery of a message already handled sends nothing.
    2. Send the mail through Django's mail backend, outside any database transaction (SMTP is slow and
       must not hold a connection in a transaction).
    3. Record the message in the inbox (`inbox_consume`), which also marks the outbox row done.

    At-least-once: a crash between 2 and 3 sends the mail again on redelivery; it is never lost. An employer
    without a contact e-mail is recorded and skipped. The partner webhook for this event (§10) will carry the
    payload as it stands: {employer_id, available, threshold} in paise.
    """
    if inbox_seen(message):
        with inbox_consume(message):
            return
    payload = message.payload
    employer = employer_contact(int(payload["employer_id"]))
    if employer is not None and employer.contact_email:
        send_mail(
            subject=f"Keel: low endorsement balance for {employer.name}",
            message=(
                f"The available balance of {employer.name}'s endorsement account is "
                f"INR {format_minor(int(payload['available']))}, below its low-balance threshold of "
                f"INR {format_minor(int(payload['threshold']))}.\n\nEndorsements that do not fit the available "
                "balance wait until a top-up arrives."
            ),
            from_email=None,
            recipient_list=[employer.contact_email],
            fail_silently=False,
        )
    else:
        log.info("ledger.low_balance_no_contact", extra={"employer_id": payload.get("employer_id")})
    with inbox_consume(message):
        pass
