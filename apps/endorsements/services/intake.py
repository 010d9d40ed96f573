"""Intake of a single endorsement request (SPEC §7): quote (no side effect) and submit (stored RECEIVED, its
processing enqueued). Batches have their own intake in `batches.py`."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from django.db import transaction
from django.utils import timezone

from apps.common.actors import Actor
from apps.common.bulk import insert_one
from apps.common.errors import Conflict, DomainValidationError
from apps.endorsements import selectors
from apps.endorsements.contracts import EndorsementTopic
from apps.endorsements.models import Endorsement
from apps.endorsements.pricing import Priced, price_against
from apps.endorsements.services.rows import received_values
from apps.endorsements.services.transitions import S, Transition, _lock_members, _record, _today
from apps.endorsements.validation import EndorsementDraft, MemberError, check_context, project_member
from apps.outbox.services import outbox_enqueue

if TYPE_CHECKING:
    from apps.employers.models import Employer, Policy

# Same content from the same employer within this window is a duplicate (SPEC §7).
DUPLICATE_WINDOW = timedelta(hours=24)


def endorsement_quote(*, employer: Employer, policy: Policy, draft: EndorsementDraft) -> Priced:
    """Validate and price without any side effect (POST /endorsements/quote).

    Raises `DomainValidationError` ({field: message}, 422) when the context (employer, policy term,
    backdating) or the member rules against the projected member state fail."""
    errors = check_context(employer=employer, policy=policy, effective_date=draft.effective_date, today=_today())
    if errors:
        raise DomainValidationError(errors)
    state = project_member(policy=policy, employee_code=draft.employee_code)
    try:
        return price_against(draft=draft, policy=policy, state=state, today=_today())
    except MemberError as exc:
        raise DomainValidationError(exc.errors)


@transaction.atomic
def endorsement_submit(
    *, employer: Employer, policy: Policy, draft: EndorsementDraft, partner_id: int, actor: Actor
) -> Endorsement:
    """Validate, price and store one endorsement (RECEIVED) and enqueue its processing.

    The caller has authenticated, resolved tenancy (employer/policy) and parsed the body into `draft`.
    1. Lock the member (advisory lock) so concurrent requests for the same member are serialised.
    2. Refuse a duplicate — the same content received in the last 24 h for this employer and not FAILED,
       REJECTED or CANCELLED — with 409 and the existing id, *before* the member rules (SPEC §7; issue 8,
       kind 10): a resent addition is a duplicate, not "already covered".
    3. Validate the context and the member against the projected state (in-flight endorsements count); 422.
    4. Insert, record history + audit, enqueue `endorsements.process` keyed by member (ordered per member).
    """
    _lock_members(policy.pk, [draft.employee_code])
    content_hash = draft.content_hash(employer_id=employer.pk, policy_id=policy.pk)
    existing = selectors.endorsement_duplicate_of(
        employer_id=employer.pk, content_hash=content_hash, since=timezone.now() - DUPLICATE_WINDOW
    )
    if existing is not None:
        raise Conflict(
            "An identical endorsement was received in the last 24 hours.",
            slug="duplicate-endorsement",
            extra={"existing_id": existing},
        )
    priced = endorsement_quote(employer=employer, policy=policy, draft=draft)
    endorsement = Endorsement(
        **received_values(
            employer=employer,
            policy=policy,
            priced=priced,
            partner_id=partner_id,
            batch_id=None,
            content_hash=content_hash,  # computed once, for the duplicate check above
        )
    )
    insert_one(endorsement)  # `save()` without the ORM's per-call compilation of the INSERT (issue 15)
    _record(
        [Transition(endorsement.pk, "", S.RECEIVED, "received")],
        actor=actor,
        endorsements={endorsement.pk: endorsement},
    )
    outbox_enqueue(topic=EndorsementTopic.PROCESS, payload={"ids": [endorsement.pk]}, key=endorsement.member_key)
    return endorsement
