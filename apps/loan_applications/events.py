"""The `loan_application.decided` partner event (SPEC §9, §10), recorded in the decision's transaction.
No PII: status, score, reasons, amount — never the PAN, name or contact details."""

from __future__ import annotations

from typing import Any

from apps.partners.webhooks.contracts import EventDraft, EventObjectType, EventType
from apps.partners.webhooks.events import partner_events_record


def loan_decided_event_record(*, application_id: object, partner_id: int, decided: dict[str, Any]) -> None:
    """`decided` is the `loan_application.decided` outbox payload (`services.decided_payload`)."""
    partner_events_record(
        [
            EventDraft(
                type=EventType.LOAN_APPLICATION_DECIDED,
                partner_id=partner_id,
                employer_id=None,
                object_type=EventObjectType.LOAN_APPLICATION,
                object_id=str(application_id),
                data={"id": str(application_id), **decided},
            )
        ]
    )
