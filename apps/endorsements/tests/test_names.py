"""The names endorsements writes (audit actions, outbox topics, partner event types) come from one list each,
with the values rows already stored carry; the COPY path of batch intake writes every column of the model."""

from datetime import UTC, datetime

from apps.endorsements.contracts import EndorsementAuditAction, EndorsementTopic
from apps.endorsements.events import EVENT_TYPE_OF
from apps.endorsements.models import Endorsement, EndorsementStatus
from apps.endorsements.services.rows import COPY_COLUMNS, copy_rows
from apps.endorsements.services.transitions import AUDIT_ACTION_OF


def test_every_status_has_its_audit_action_and_partner_event_with_the_stored_value():
    for status in EndorsementStatus:
        assert AUDIT_ACTION_OF[status] == f"endorsement.{status.value.lower()}"
        assert EVENT_TYPE_OF[status] == f"endorsement.{status.value.lower()}"
    assert set(AUDIT_ACTION_OF) == set(EndorsementStatus)
    assert set(EVENT_TYPE_OF) == set(EndorsementStatus)
    assert EndorsementAuditAction.BATCH_CREATED == "endorsement_batch.created"


def test_topics_keep_their_stored_values():
    assert EndorsementTopic.PROCESS == "endorsements.process"
    assert EndorsementTopic.DISPATCH == "endorsements.dispatch"


def test_copy_writes_every_column_given_values_else_the_model_defaults():
    assert set(COPY_COLUMNS) == {f.column for f in Endorsement._meta.concrete_fields}
    now = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    [row] = list(copy_rows([7], [{"type": "addition", "details": {"first_name": "Asha"}}], now=now))

    cells = dict(zip(COPY_COLUMNS, row, strict=True))
    assert cells["id"] == 7
    assert cells["type"] == "addition"
    assert cells["details"] == '{"first_name": "Asha"}'  # JSON as text, as COPY reads it
    assert cells["status"] == EndorsementStatus.RECEIVED
    assert (cells["review_approved"], cells["funding_generation"], cells["premium_amount"]) == (False, 0, 0)
    assert (cells["insurer_reference"], cells["rejection_class"], cells["last_error"]) == ("", "", "")
    assert (cells["ready_at"], cells["sent_at"], cells["activated_at"]) == (None, None, None)
    assert cells["created_at"] == cells["updated_at"] == now
