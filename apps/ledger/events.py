"""Partner events of the ledger (SPEC §6, §10): `ledger.topup_posted` and `ledger.low_balance`, recorded in the
posting's transaction (one call per site). Amounts are decimal strings in rupees."""

from __future__ import annotations

from apps.common.money import format_minor
from apps.partners.webhooks.contracts import EventDraft, EventObjectType, EventType
from apps.partners.webhooks.events import partner_events_record


def topup_posted_event_record(
    *, transaction_id: int, employer_id: int, amount: int, reference: str, posted: int, held: int
) -> None:
    """`ledger.topup_posted` about the top-up transaction; `amount`, `posted`, `held` in paise."""
    partner_events_record(
        [
            EventDraft(
                type=EventType.LEDGER_TOPUP_POSTED,
                partner_id=None,
                employer_id=employer_id,
                object_type=EventObjectType.LEDGER_TRANSACTION,
                object_id=str(transaction_id),
                data={
                    "transaction": transaction_id,
                    "employer": employer_id,
                    "amount": format_minor(amount),
                    "reference": reference,
                    "currency": "INR",
                    "posted": format_minor(posted),
                    "held": format_minor(held),
                    "available": format_minor(posted - held),
                },
            )
        ]
    )


def low_balance_event_record(*, employer_id: int, available: int, threshold: int) -> None:
    """`ledger.low_balance` once per downward crossing of the threshold, about the employer's account."""
    partner_events_record(
        [
            EventDraft(
                type=EventType.LEDGER_LOW_BALANCE,
                partner_id=None,
                employer_id=employer_id,
                object_type=EventObjectType.LEDGER_ACCOUNT,
                object_id=f"employer:{employer_id}",
                data={
                    "employer": employer_id,
                    "currency": "INR",
                    "available": format_minor(max(available, 0)),
                    "low_balance_threshold": format_minor(threshold),
                },
            )
        ]
    )
