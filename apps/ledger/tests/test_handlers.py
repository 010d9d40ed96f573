"""The `ledger.low_balance` consumer e-mails the employer's contact once per message."""

from __future__ import annotations

import pytest
from django.core import mail

from apps.ledger import services
from apps.ledger.handlers import low_balance_notify
from apps.ledger.services import LedgerTopic
from apps.ledger.tests.factories import SYSTEM, funded_employer
from apps.outbox.contracts import Message
from apps.outbox.models import InboxEntry, OutboxMessage
from apps.outbox.registry import get as consumer_for
from apps.outbox.tasks import deliver_message

pytestmark = pytest.mark.django_db


def cross_low(**employer_fields):
    employer = funded_employer(1000_00, low_balance_threshold=500_00, **employer_fields)
    services.hold_place(employer_id=employer.pk, amount=600_00, reference=f"h-{employer.pk}", actor=SYSTEM)
    return employer, OutboxMessage.objects.get(topic=LedgerTopic.LOW_BALANCE)


def test_low_balance_consumer_is_registered_on_the_ledger_queue():
    spec = consumer_for(LedgerTopic.LOW_BALANCE)

    assert spec is not None
    assert (spec.queue, spec.handler) == ("ledger", low_balance_notify)
    assert (
        consumer_for(LedgerTopic.FUNDS_AVAILABLE) is None or consumer_for(LedgerTopic.FUNDS_AVAILABLE).queue != "ledger"
    )


def test_low_balance_sends_one_email_to_the_contact_even_when_delivered_twice():
    _employer, message = cross_low(name="Globex", contact_email="hr@globex.example")

    delivered = Message(
        id=message.pk,
        topic=message.topic,
        key=message.key,
        payload=message.payload,
        headers=message.headers,
        attempt=0,
        created_at=message.created_at,
    )

    low_balance_notify(delivered)
    low_balance_notify(delivered)  # a duplicate delivery (relay crash after publish)

    assert len(mail.outbox) == 1
    sent = mail.outbox[0]
    assert sent.to == ["hr@globex.example"]
    assert "Globex" in sent.subject
    assert "INR 400.00" in sent.body
    assert "INR 500.00" in sent.body
    assert InboxEntry.objects.filter(message_id=message.pk).count() == 1
    assert OutboxMessage.objects.get(pk=message.pk).status == "done"


def test_low_balance_without_contact_email_sends_nothing_and_is_done():
    _employer, message = cross_low(contact_email="")

    deliver_message(message.pk)

    assert mail.outbox == []
    assert OutboxMessage.objects.get(pk=message.pk).status == "done"
