"""Insurer results that contradict a state Keel already decided (issue 8, kind 11; ADR 0020).

The rule: a result is applied only to an endorsement still waiting for it. A rejection of an endorsement Keel
holds CONFIRMED/ACTIVE, or a confirmation of one Keel FAILED, CANCELLED or REJECTED, is a *conflict*: nothing
is overwritten (endorsement, ledger, our `InsurerSubmission` log), the callback item answers 409 with the
current state, and an `InsurerConflict` row (admin: "Insurer conflicts") plus an audit event record it.
Operators then either **accept the insurer's result** (applied through the endorsements app's services: a
fresh hold captured again, or the rejection applied and the hold released) or **ask the insurer to reverse**
(Keel's decision stands; the request is recorded) — each audited.

This app sits below `endorsements` and may not import it: the endorsements app wires in, at start-up, the
function that reads its endorsements' states and the one that applies an accepted result
(`conflicts_wire`, called from `EndorsementsConfig.ready`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime

import structlog
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from apps.audit.services import audit_record
from apps.common.actors import Actor
from apps.common.errors import Conflict
from apps.insurers.contracts import (
    DecidedState,
    InsurerAuditAction,
)
from apps.insurers.models import ConflictStatus, InsurerConflict, InsurerSubmission, SubmissionState

__all__ = [
    "StateReader",
    "conflicts_wire",
    "contradicts",
    "decided_states",
    "insurer_conflict_accept",
    "insurer_conflict_record",
    "insurer_conflict_request_reversal",
]

log = structlog.get_logger(__name__)

# {endorsement id: DecidedState} for the ids that exist (read-only; may run inside the caller's transaction).
StateReader = Callable[[Collection[int]], dict[int, DecidedState]]
# Applies the insurer's result of an unresolved conflict inside the caller's transaction; returns what it did.
# Raises `apps.common.errors.Conflict` (409) when it cannot (nothing written).
Acceptor = Callable[[InsurerConflict, Actor], str]

_wiring: dict[str, Callable[..., object]] = {}


def conflicts_wire(*, state_reader: StateReader, acceptor: Acceptor) -> None:
    """Called once by the endorsements app at start-up (the layer above this one)."""
    _wiring["state_reader"] = state_reader
    _wiring["acceptor"] = acceptor


def decided_states(endorsement_ids: Collection[int]) -> dict[int, DecidedState]:
    """The endorsements' states as Keel holds them now ({} when no endorsements app is wired in)."""
    reader = _wiring.get("state_reader")
    if reader is None or not endorsement_ids:
        return {}
    return reader(endorsement_ids)  # type: ignore[return-value]


def contradicts(outcome: str, state: DecidedState | None) -> bool:
    """True when the insurer's `outcome` (confirmed|rejected) contradicts what Keel decided; undecided
    endorsements (in flight) and agreeing results (a rejection of a FAILED one) are not conflicts."""
    if state is None or state.covered is None:
        return False
    return (outcome == "rejected" and state.covered) or (outcome == "confirmed" and not state.covered)


def insurer_conflict_record(
    *,
    insurer_id: int | None,
    endorsement_id: int,
    source: str,
    outcome: str,
    keel_status: str,
    insurer_reference: str = "",
    rejection_class: str = "",
    rejection_reason: str = "",
    now: datetime | None = None,
) -> InsurerConflict:
    """Record a contradicting result in the caller's transaction; returns its unresolved conflict row.

    1. An unresolved conflict for the same (endorsement, outcome) exists (a redelivery, or the same result seen
       by the callback and again by the endorsements app under its row lock): count the occurrence, return it.
    2. Otherwise insert it in a savepoint — the partial unique index makes two concurrent first sightings
       create one row (the loser re-reads) — and audit `insurer.result_conflict_recorded`.
    `insurer_id` None: the insurer of the endorsement's latest submission.
    """
    now = now or timezone.now()
    existing = _unresolved(endorsement_id, outcome)
    if existing is not None:
        InsurerConflict.objects.filter(pk=existing.pk).update(occurrences=F("occurrences") + 1, last_seen_at=now)
        existing.refresh_from_db()
        return existing
    submission = (
        InsurerSubmission.objects.filter(
            endorsement_id=endorsement_id, **({"insurer_id": insurer_id} if insurer_id else {})
        )
        .order_by("-id")
        .first()
    )  # the submission the result answers: the latest one (to that insurer, when given)
    try:
        with transaction.atomic():
            conflict = InsurerConflict.objects.create(
                insurer_id=insurer_id or (submission.insurer_id if submission else None),
                endorsement_id=endorsement_id,
                submission=submission,
                source=source,
                insurer_outcome=outcome,
                insurer_reference=insurer_reference[:120],
                rejection_class=rejection_class[:24],
                rejection_reason=rejection_reason[:500],
                keel_status=keel_status,
                detected_at=now,
                last_seen_at=now,
            )
    except IntegrityError:
        again = _unresolved(endorsement_id, outcome)
        assert again is not None, "the unique index refused a row that is not there"
        return again
    _announce(conflict)
    return conflict


def _announce(conflict: InsurerConflict) -> None:
    """Audit `insurer.result_conflict_recorded` for a new conflict row and log it for operators."""
    endorsement_id, source, outcome, keel_status = (
        conflict.endorsement_id,
        conflict.source,
        conflict.insurer_outcome,
        conflict.keel_status,
    )
    audit_record(
        actor=Actor.system(f"insurer.{source}"),
        action=InsurerAuditAction.CONFLICT_RECORDED,
        object_type="endorsement",
        object_id=endorsement_id,
        before={"status": keel_status},
        after={
            "conflict_id": conflict.pk,
            "insurer_outcome": outcome,
            "insurer_reference": conflict.insurer_reference,
            "rejection_class": conflict.rejection_class,
            "source": source,
        },
    )
    log.warning(
        "insurers.result_conflict",
        conflict_id=conflict.pk,
        endorsement_id=endorsement_id,
        insurer_outcome=outcome,
        keel_status=keel_status,
        source=source,
    )


def _unresolved(endorsement_id: int, outcome: str) -> InsurerConflict | None:
    return (
        InsurerConflict.objects.select_for_update()
        .filter(endorsement_id=endorsement_id, insurer_outcome=outcome)
        .exclude(status=ConflictStatus.RESOLVED)
        .first()
    )


def _locked_unresolved(conflict_id: int) -> InsurerConflict:
    conflict = InsurerConflict.objects.select_for_update().filter(pk=conflict_id).first()
    if conflict is None:
        raise Conflict(f"No insurer conflict {conflict_id}.", slug="conflict-not-found")
    if conflict.status == ConflictStatus.RESOLVED:
        raise Conflict(f"Conflict {conflict_id} is already resolved.", slug="conflict-resolved")
    return conflict


@transaction.atomic
def insurer_conflict_accept(*, conflict_id: int, actor: Actor, note: str = "") -> InsurerConflict:
    """Operator: the insurer is right. Apply its result to the endorsement (through the endorsements app's
    services: a confirmation holds and captures the premium again and starts the cover; a rejection of a
    CONFIRMED endorsement rejects it and releases its hold), record the result in our submission log, mark
    the conflict resolved and audit it — one transaction. Raises `Conflict` (409, nothing written) when the
    result cannot be applied now (e.g. not enough available balance to hold the premium again)."""
    conflict = _locked_unresolved(conflict_id)
    acceptor = _wiring.get("acceptor")
    if acceptor is None:
        raise Conflict("No endorsements app is wired in to apply the insurer's result.", slug="conflict-not-wired")
    applied = str(acceptor(conflict, actor))
    now = timezone.now()
    if conflict.submission_id:
        InsurerSubmission.objects.filter(pk=conflict.submission_id).update(
            last_outcome=SubmissionState(conflict.insurer_outcome),
            insurer_reference=conflict.insurer_reference or F("insurer_reference"),
            rejection_class=conflict.rejection_class,
            rejection_reason=conflict.rejection_reason,
            responded_at=now,
        )
    before = {"status": conflict.status}
    conflict.status = ConflictStatus.RESOLVED
    conflict.resolution_note = f"accepted the insurer's result: {applied}. {note}".strip()[:500]
    conflict.resolved_by = actor.display[:120]
    conflict.resolved_at = now
    conflict.save(update_fields=["status", "resolution_note", "resolved_by", "resolved_at"])
    audit_record(
        actor=actor,
        action=InsurerAuditAction.CONFLICT_ACCEPTED,
        object_type="insurer_conflict",
        object_id=conflict.pk,
        before=before,
        after={"status": conflict.status, "endorsement_id": conflict.endorsement_id, "applied": applied},
    )
    return conflict


@transaction.atomic
def insurer_conflict_request_reversal(*, conflict_id: int, actor: Actor, note: str = "") -> InsurerConflict:
    """Operator: Keel's decision stands; the insurer is asked to reverse its result. The endorsement, ledger
    and submission log stay as they are; the conflict waits in `reversal_requested` (a redelivery of the same
    result counts on it) until the insurer sends the agreeing result or an operator accepts after all.
    The request itself goes through the insurer's operations channel (the gateways have no reversal call);
    `note` records how and when it was made."""
    conflict = _locked_unresolved(conflict_id)
    if conflict.status != ConflictStatus.OPEN:
        raise Conflict(f"A reversal of conflict {conflict_id} was already requested.", slug="reversal-requested")
    conflict.status = ConflictStatus.REVERSAL_REQUESTED
    conflict.resolution_note = (note or "reversal requested from the insurer")[:500]
    conflict.resolved_by = actor.display[:120]
    conflict.save(update_fields=["status", "resolution_note", "resolved_by"])
    audit_record(
        actor=actor,
        action=InsurerAuditAction.CONFLICT_REVERSAL_REQUESTED,
        object_type="insurer_conflict",
        object_id=conflict.pk,
        before={"status": ConflictStatus.OPEN},
        after={"status": conflict.status, "endorsement_id": conflict.endorsement_id, "note": conflict.resolution_note},
    )
    return conflict
