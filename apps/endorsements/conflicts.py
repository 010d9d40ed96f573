"""The endorsements side of insurer-result conflicts (issue 8, kind 11; ADR 0020).

`apps.insurers.conflicts` decides what a conflict is and keeps the `InsurerConflict` rows; it cannot import
this app, so `wire()` (called from `EndorsementsConfig.ready`) hands it the two things only this app knows:
the endorsements' decided states, and how to apply an insurer's result an operator accepted.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

from apps.common.actors import Actor
from apps.common.errors import Conflict, DomainValidationError
from apps.endorsements.models import Endorsement, EndorsementStatus, PremiumDirection
from apps.insurers.contracts import DecidedState

if TYPE_CHECKING:
    from apps.endorsements.services.results import InsurerOutcome
    from apps.insurers.models import InsurerConflict

S = EndorsementStatus
COVERED = frozenset({S.CONFIRMED, S.ACTIVE})
NOT_COVERED = frozenset({S.FAILED, S.CANCELLED, S.REJECTED})


def decided_state(status: str) -> DecidedState:
    return DecidedState(status=status, covered=True if status in COVERED else False if status in NOT_COVERED else None)


def endorsement_decided_states(ids: Collection[int]) -> dict[int, DecidedState]:
    """{id: DecidedState} for the endorsements among `ids` (one query)."""
    rows = Endorsement.objects.filter(pk__in=list(ids)).values_list("pk", "status")
    return {pk: decided_state(status) for pk, status in rows}


def contradictions_record(*, pairs: Sequence[tuple[Endorsement, InsurerOutcome]], source: str) -> int:
    """`results_apply` calls this, under its row locks, with the outcomes it did not apply because their
    endorsement had left SENT; the ones that contradict the decided state become insurer conflicts (a
    confirmation arriving after Keel FAILED the endorsement goes through here). Returns how many."""
    from apps.insurers.conflicts import contradicts, insurer_conflict_record

    count = 0
    for e, o in pairs:
        state = decided_state(e.status)
        if o.outcome in ("confirmed", "rejected") and contradicts(o.outcome, state):
            insurer_conflict_record(
                insurer_id=e.insurer_id,
                endorsement_id=e.pk,
                source=source,
                outcome=o.outcome,
                keel_status=e.status,
                insurer_reference=o.insurer_reference or "",
                rejection_class=o.rejection_class or "",
                rejection_reason=o.rejection_reason or "",
            )
            count += 1
    return count


def conflict_accept(conflict: InsurerConflict, actor: Actor) -> str:
    """Apply the insurer's result of `conflict` to its endorsement, in the caller's transaction.

    Confirmation of a FAILED/CANCELLED/REJECTED endorsement:
    1. refuse (409) if a later endorsement for the same member is in flight or in force (applying this one
       now would reorder them) — the operator settles that by hand;
    2. a debit takes a fresh hold (next funding generation) — refused (409, nothing written) if the employer's
       available balance cannot cover it;
    3. → CONFIRMED with the insurer's reference, and → ACTIVE at once when effective (capture, cover started),
       else on its date like any confirmed endorsement.
    Rejection of a CONFIRMED endorsement: → REJECTED, hold released. Of an ACTIVE one: refused (409) — cover
    is in force; a deletion endorsement ends it (or the operator asks the insurer to reverse).
    """
    e = Endorsement.objects.select_for_update().filter(pk=conflict.endorsement_id).first()
    if e is None:
        raise Conflict(f"Endorsement {conflict.endorsement_id} does not exist.", slug="conflict-endorsement-missing")
    if conflict.insurer_outcome == "confirmed":
        return _accept_confirmation(e, conflict, actor)
    return _accept_rejection(e, conflict, actor)


def _accept_confirmation(e: Endorsement, conflict: InsurerConflict, actor: Actor) -> str:
    """Steps 1–3 of a confirmation (see `conflict_accept`), on the locked endorsement `e`."""
    # Imported here: the services import this module (`contradictions_record`).
    from apps.endorsements.services.results import _activate_many
    from apps.endorsements.services.transitions import _move, _on_terminal, _record, _today

    previous = e.status
    if e.status not in NOT_COVERED:
        raise Conflict(f"Endorsement {e.pk} is {e.status} now; there is nothing to accept.", slug="conflict-stale")
    later = (
        Endorsement.objects.filter(policy_id=e.policy_id, employee_code=e.employee_code, pk__gt=e.pk)
        .exclude(status__in=NOT_COVERED)
        .order_by("id")
        .first()
    )
    if later is not None:
        raise Conflict(
            f"Endorsement {later.pk} for the same member came later and is {later.status}: accepting would "
            "apply them out of order. Settle it by hand.",
            slug="conflict-later-endorsement",
        )
    generation = e.funding_generation + 1
    held = _hold_again(e, generation=generation, actor=actor)
    t = _move(
        e,
        S.CONFIRMED,
        allowed_from=NOT_COVERED,
        detail=f"insurer's confirmation accepted by {actor.display} (insurer conflict {conflict.pk})",
        insurer_reference=conflict.insurer_reference[:100],
        rejection_class="",
        rejection_reason="",
        last_error="",
        funding_generation=generation,
    )
    assert t is not None  # the row lock makes the conditional update certain
    transitions = [t]
    if e.effective_date <= _today():
        try:
            transitions += _activate_many([e], actor=actor)
        except DomainValidationError as exc:
            raise Conflict(f"Cover cannot start: {exc.errors}", slug="conflict-cover") from exc
    _record(transitions, actor=actor, endorsements={e.pk: e})
    if e.status == S.ACTIVE:
        _on_terminal([e])
        held += " and captured" if held else ""
    return f"endorsement {e.pk} {previous} → {e.status}{held}"


def _hold_again(e: Endorsement, *, generation: int, actor: Actor) -> str:
    """Step 2: a debit takes a fresh hold of its premium (paise) under funding `generation`; raises `Conflict`
    (409, `conflict-insufficient-funds`) when the available balance cannot cover it. Returns the note for
    the operator ("" when nothing was held)."""
    from apps.ledger import services as ledger

    if not (e.premium_direction == PremiumDirection.DEBIT and e.premium_amount > 0):
        return ""
    e.funding_generation = generation
    [result] = ledger.holds_place_bulk(
        employer_id=e.employer_id,
        requests=[ledger.HoldRequest(reference=e.hold_reference, amount=e.premium_amount, endorsement_id=e.pk)],
        actor=actor,
    )
    if not result.placed:
        raise Conflict(
            f"The employer's available balance ({result.available_after} paise) cannot hold the premium "
            f"again ({e.premium_amount} paise): top up, then accept again.",
            slug="conflict-insufficient-funds",
        )
    return f", premium of {e.premium_amount} paise held again"


def _accept_rejection(e: Endorsement, conflict: InsurerConflict, actor: Actor) -> str:
    """A rejection of a CONFIRMED endorsement (see `conflict_accept`), on the locked endorsement `e`."""
    from apps.endorsements.services.funds import _release_hold
    from apps.endorsements.services.transitions import _move, _on_terminal, _record

    if e.status == S.ACTIVE:
        raise Conflict(
            f"Endorsement {e.pk} is ACTIVE (cover in force): end it with a deletion endorsement, or ask the insurer "
            "to reverse its rejection.",
            slug="conflict-cover-in-force",
        )
    if e.status != S.CONFIRMED:
        raise Conflict(f"Endorsement {e.pk} is {e.status} now; there is nothing to accept.", slug="conflict-stale")
    reason = (conflict.rejection_reason or "rejected by insurer")[:500]
    t = _move(
        e,
        S.REJECTED,
        allowed_from=[S.CONFIRMED],
        detail=f"insurer's rejection accepted by {actor.display} (insurer conflict {conflict.pk}): {reason}",
        rejection_class=(conflict.rejection_class or "unknown")[:24],
        rejection_reason=reason,
    )
    assert t is not None
    _release_hold(e, actor=actor, reason=f"insurer rejection accepted (conflict {conflict.pk})")
    _record([t], actor=actor, endorsements={e.pk: e})
    _on_terminal([e])
    return f"endorsement {e.pk} CONFIRMED → REJECTED, hold released"


def wire() -> None:
    from apps.insurers.conflicts import conflicts_wire

    conflicts_wire(state_reader=endorsement_decided_states, acceptor=conflict_accept)
