"""Partner events of endorsements and batches (SPEC §10): `endorsement.<status>` for every transition and
`endorsement_batch.completed`. Called from the services' transactions (one call per site); the payload is
the API's view of the endorsement without personal data (no names, e-mails or dates of birth)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from django.db.models import Count

from apps.common.money import format_minor
from apps.endorsements.models import Endorsement, EndorsementBatch, EndorsementStatus
from apps.partners.webhooks.contracts import EventDraft, EventObjectType, EventType
from apps.partners.webhooks.events import partner_events_record

S = EndorsementStatus
# The partner event of reaching each status (one member each, so `grep` finds where each type is written).
EVENT_TYPE_OF: dict[str, EventType] = {
    S.RECEIVED: EventType.ENDORSEMENT_RECEIVED,
    S.VALIDATED: EventType.ENDORSEMENT_VALIDATED,
    S.ON_HOLD_FUNDS: EventType.ENDORSEMENT_ON_HOLD_FUNDS,
    S.ON_HOLD_REVIEW: EventType.ENDORSEMENT_ON_HOLD_REVIEW,
    S.FUNDS_LOCKED: EventType.ENDORSEMENT_FUNDS_LOCKED,
    S.SENT: EventType.ENDORSEMENT_SENT,
    S.CONFIRMED: EventType.ENDORSEMENT_CONFIRMED,
    S.ACTIVE: EventType.ENDORSEMENT_ACTIVE,
    S.REJECTED: EventType.ENDORSEMENT_REJECTED,
    S.FAILED: EventType.ENDORSEMENT_FAILED,
    S.CANCELLED: EventType.ENDORSEMENT_CANCELLED,
}


class _Transition(Protocol):
    @property
    def endorsement_id(self) -> int: ...
    @property
    def from_status(self) -> str: ...
    @property
    def to_status(self) -> str: ...
    @property
    def detail(self) -> str: ...


def _data(e: Endorsement, *, previous: str, detail: str) -> dict[str, Any]:
    return {
        "id": e.pk,
        "employer": e.employer_id,
        "policy": e.policy_id,
        "type": e.type,
        "status": e.status,
        "previous_status": previous or None,
        "employee_code": e.employee_code,
        "effective_date": str(e.effective_date),
        "premium_amount": format_minor(e.premium_amount),
        "premium_direction": e.premium_direction,
        "batch": e.batch_id,
        "insurer_reference": e.insurer_reference or None,
        "rejection_class": e.rejection_class or None,
        "rejection_reason": e.rejection_reason or None,
        "detail": detail[:500],
    }


def endorsement_events_record(transitions: Sequence[_Transition], endorsements: Mapping[int, Endorsement]) -> None:
    """One `endorsement.<to_status>` event per transition, in the transitions' order."""
    drafts = []
    for t in transitions:
        e = endorsements[t.endorsement_id]
        data = _data(e, previous=t.from_status, detail=t.detail)
        data["status"] = t.to_status
        drafts.append(
            EventDraft(
                type=EVENT_TYPE_OF[t.to_status],
                partner_id=e.partner_id,
                employer_id=e.employer_id,
                object_type=EventObjectType.ENDORSEMENT,
                object_id=str(e.pk),
                data=data,
            )
        )
    partner_events_record(drafts)


# Endorsements read back and recorded per round by `endorsements_received_events_record`: a 50,000-row upload
# held 50,000 model instances, their drafts and their events at once (issue 15 part 4: web peak RSS).
RECEIVED_EVENTS_CHUNK = 2_000


def endorsements_received_events_record(ids: Sequence[int]) -> None:
    """`endorsement.received` for rows inserted in bulk (batches), read back `RECEIVED_EVENTS_CHUNK` at a time
    (one query and one `partner_events_record` per chunk), so memory is bounded by the chunk, not the batch."""
    for start in range(0, len(ids), RECEIVED_EVENTS_CHUNK):
        rows = Endorsement.objects.filter(pk__in=list(ids[start : start + RECEIVED_EVENTS_CHUNK])).order_by("id")
        partner_events_record(
            [
                EventDraft(
                    type=EventType.ENDORSEMENT_RECEIVED,
                    partner_id=e.partner_id,
                    employer_id=e.employer_id,
                    object_type=EventObjectType.ENDORSEMENT,
                    object_id=str(e.pk),
                    data=_data(e, previous="", detail=f"received in batch {e.batch_id}"),
                )
                for e in rows
            ]
        )


def batch_completed_events_record(batch_ids: Sequence[int]) -> None:
    """`endorsement_batch.completed` for batches whose rows are all terminal (called once per batch, by the
    conditional update that set `completed_at`)."""
    if not batch_ids:
        return
    drafts = []
    for batch in EndorsementBatch.objects.filter(pk__in=list(batch_ids)).order_by("id"):
        counts = dict(
            Endorsement.objects.filter(batch_id=batch.pk)
            .values_list("status")
            .annotate(n=Count("id"))
            .values_list("status", "n")
        )
        drafts.append(
            EventDraft(
                type=EventType.ENDORSEMENT_BATCH_COMPLETED,
                partner_id=batch.partner_id,
                employer_id=batch.employer_id,
                object_type=EventObjectType.ENDORSEMENT_BATCH,
                object_id=str(batch.pk),
                data={
                    "id": batch.pk,
                    "employer": batch.employer_id,
                    "policy": batch.policy_id,
                    "total_rows": batch.total_rows,
                    "accepted": batch.accepted,
                    "rejected": batch.rejected,
                    "counts": dict(sorted(counts.items())),
                    "completed_at": batch.completed_at.isoformat() if batch.completed_at else None,
                },
            )
        )
    partner_events_record(drafts)
