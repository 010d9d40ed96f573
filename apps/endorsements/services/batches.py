"""Batch intake (SPEC §7): the valid rows of an upload stored RECEIVED in bulk, the invalid ones reported
with their row and line; and the cancel of a whole batch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils import timezone

from apps.audit.services import audit_record
from apps.common import bulk
from apps.common.actors import Actor
from apps.endorsements import selectors
from apps.endorsements.contracts import EndorsementAuditAction, EndorsementTopic
from apps.endorsements.events import batch_completed_events_record, endorsements_received_events_record
from apps.endorsements.models import CANCELLABLE, Endorsement, EndorsementBatch, EndorsementHistory
from apps.endorsements.pricing import Priced, price_against
from apps.endorsements.services.funds import _release_holds
from apps.endorsements.services.intake import DUPLICATE_WINDOW
from apps.endorsements.services.rows import COPY_COLUMNS, copy_rows, received_values
from apps.endorsements.services.transitions import (
    HISTORY_COLUMNS,
    S,
    _lock_members,
    _move_many,
    _on_terminal,
    _record,
    _Step,
    _today,
)
from apps.endorsements.validation import (
    LARGE_IN_LIST,
    EndorsementDraft,
    MemberError,
    MemberState,
    apply_to_projection,
    check_context,
    project_members,
)
from apps.outbox.services import outbox_enqueue

if TYPE_CHECKING:
    from apps.employers.models import Employer, Policy

# Rows per `endorsements.process` event of a batch.
PROCESS_CHUNK = 500


@dataclass(frozen=True, slots=True)
class RowError:
    row: int  # 1-based data row (the CSV header and blank rows are not rows)
    field: str
    detail: str
    line: int | None = None  # 1-based line of the CSV file on which the row starts (None for JSON rows)


@transaction.atomic
def endorsement_batch_create(
    *,
    employer: Employer,
    policy: Policy,
    drafts: Sequence[EndorsementDraft | None],
    parse_errors: Sequence[RowError],
    source: str,
    partner_id: int,
    actor: Actor,
    lines: Sequence[int] | None = None,
) -> EndorsementBatch:
    """Accept the valid rows of a batch and report the invalid ones; nothing valid is lost (SPEC §7).

    `drafts[i]` is data row i+1 (None where parsing failed: its errors are in `parse_errors`); `lines[i]` is the
    CSV line it starts on, reported with each of its errors.
    1. Every member locked (sorted advisory locks); members projected once for the whole batch (2 queries).
    2. Per row, in row order: a duplicate of content received in the last 24 h (one query; endorsements that
       ended FAILED, REJECTED or CANCELLED do not count) or earlier in the same file is a row error naming the
       original — checked before the context and member rules, as for single requests (issue 8, kind 10);
       then context (employer active, policy term, backdating); then member rules against the projection,
       each accepted row applied to it, so "add then delete" in one file is valid and "add twice" is not.
    3. Bulk inserts of endorsements and history; one audit event for the batch; one `endorsements.process`
       event per 500 rows, with no ordering key: the chunks of one batch may be processed by several workers
       at once (ADR 0043). Per-member order does not depend on it — `endorsements_process` takes the members'
       locks and holds a member's later endorsement until the earlier one is terminal.
    """
    today = _today()
    employee_codes = [d.employee_code for d in drafts if d is not None]
    _lock_members(policy.pk, employee_codes)
    states = project_members(policy=policy, employee_codes=employee_codes)
    hashes = {i: d.content_hash(employer_id=employer.pk, policy_id=policy.pk) for i, d in enumerate(drafts) if d}
    recent = _recent_duplicates(employer, set(hashes.values()))
    accepted, errors = _check_rows(
        employer=employer,
        policy=policy,
        drafts=drafts,
        hashes=hashes,
        recent=recent,
        states=states,
        errors=list(parse_errors),
        source=source,
        lines=lines,
        today=today,
    )
    return _batch_store(
        employer=employer,
        policy=policy,
        total_rows=len(drafts),
        accepted=accepted,
        errors=errors,
        source=source,
        partner_id=partner_id,
        actor=actor,
    )


def _recent_duplicates(employer: Employer, wanted_hashes: set[str]) -> dict[str, int]:
    """{content hash: first endorsement id} of the employer's endorsements received within DUPLICATE_WINDOW
    that count as originals (not FAILED, REJECTED or CANCELLED), among `wanted_hashes`. One query; a large
    batch filters the hashes here rather than in an `IN (…)` list."""
    recent_rows = Endorsement.objects.filter(
        employer=employer, created_at__gte=timezone.now() - DUPLICATE_WINDOW
    ).exclude(status__in=selectors.NOT_DUPLICATED_BY)
    if len(wanted_hashes) <= LARGE_IN_LIST:
        recent_rows = recent_rows.filter(content_hash__in=wanted_hashes)
    recent: dict[str, int] = {}
    for content_hash, pk in recent_rows.order_by("id").values_list("content_hash", "id"):
        if content_hash in wanted_hashes:
            recent.setdefault(content_hash, pk)
    return recent


def _check_rows(
    *,
    employer: Employer,
    policy: Policy,
    drafts: Sequence[EndorsementDraft | None],
    hashes: dict[int, str],
    recent: dict[str, int],
    states: dict[str, MemberState],
    errors: list[RowError],
    source: str,
    lines: Sequence[int] | None,
    today: date,
) -> tuple[list[tuple[Priced, str]], list[RowError]]:
    """Step 2: ([(priced row, content hash)] accepted in row order, every row error sorted by row and field).
    No query: duplicates are looked up in `recent`, members in `states` (updated with each accepted row)."""
    seen_in_file: dict[str, int] = {}
    accepted: list[tuple[Priced, str]] = []
    for index, draft in enumerate(drafts):
        if draft is None:
            continue
        row = index + 1
        line = lines[index] if lines is not None else None
        content = hashes[index]
        if content in recent:
            detail = f"Duplicate of endorsement {recent[content]} received in the last 24 h."
            errors.append(RowError(row, "row", detail, line))
            continue
        if content in seen_in_file:
            errors.append(RowError(row, "row", f"Duplicate of row {seen_in_file[content]}.", line))
            continue
        context = check_context(employer=employer, policy=policy, effective_date=draft.effective_date, today=today)
        if context:
            errors += [RowError(row, f, d, line) for f, d in context.items()]
            continue
        state = states.setdefault(draft.employee_code, MemberState(covered=False, sum_insured=None))
        try:
            priced = price_against(draft=draft, policy=policy, state=state, today=today)
        except MemberError as exc:
            named = {f.split(".")[-1] if source == "csv" else f: d for f, d in exc.errors.items()}
            errors += [RowError(row, f, d, line) for f, d in named.items()]
            continue
        apply_to_projection(state, kind=draft.type, sum_insured=priced.sum_insured)
        seen_in_file[content] = row
        accepted.append((priced, content))
    errors.sort(key=lambda e: (e.row, e.field))
    return accepted, errors


def _batch_store(
    *,
    employer: Employer,
    policy: Policy,
    total_rows: int,
    accepted: Sequence[tuple[Priced, str]],
    errors: Sequence[RowError],
    source: str,
    partner_id: int,
    actor: Actor,
) -> EndorsementBatch:
    """Step 3: the batch row, its accepted endorsements (RECEIVED) with history, partner events, one audit
    event and one `endorsements.process` event per PROCESS_CHUNK rows."""
    batch = EndorsementBatch.objects.create(
        employer=employer,
        policy=policy,
        partner_id=partner_id,
        source=source,
        total_rows=total_rows,
        accepted=len(accepted),
        rejected=len({e.row for e in errors}),
        errors=[{"row": e.row, "line": e.line, "field": e.field, "detail": e.detail} for e in errors],
        completed_at=None if accepted else timezone.now(),
    )
    ids = _insert_received(
        employer=employer, policy=policy, accepted=accepted, partner_id=partner_id, batch_id=batch.pk, actor=actor
    )
    endorsements_received_events_record(ids)  # partner events (SPEC §10, issue 13)
    if not accepted:
        batch_completed_events_record([batch.pk])  # nothing to wait for: complete at once (issue 13)
    audit_record(
        actor=actor,
        action=EndorsementAuditAction.BATCH_CREATED,
        object_type="endorsement_batch",
        object_id=batch.pk,
        employer_id=employer.pk,
        after={
            "total_rows": batch.total_rows,
            "accepted": batch.accepted,
            "rejected": batch.rejected,
            "first_endorsement_id": ids[0] if ids else None,
            "last_endorsement_id": ids[-1] if ids else None,
        },
    )
    for start in range(0, len(ids), PROCESS_CHUNK):
        outbox_enqueue(
            topic=EndorsementTopic.PROCESS,
            payload={"ids": ids[start : start + PROCESS_CHUNK]},
            key=None,  # chunks in parallel; per-member order is kept by endorsements_process (ADR 0043)
        )
    return batch


def _insert_received(
    *,
    employer: Employer,
    policy: Policy,
    accepted: Sequence[tuple[Priced, str]],
    partner_id: int,
    batch_id: int,
    actor: Actor,
) -> list[int]:
    """Insert a batch's accepted rows (RECEIVED) and their first history rows; returns their ids in row order.

    PostgreSQL: ids from the sequence, then `COPY` of both tables (a 10,000-row batch in one round trip each
    instead of building and binding 10,000 model instances). Elsewhere: `bulk_create`. Both paths write the
    values of `rows.received_values` (the columns are defined once, in `rows.py`).
    """
    # A generator: COPY streams each row's values as it is made (a 50,000-row batch held 50,000 dicts of ~25
    # columns at once; issue 15 part 4).
    values: Iterator[dict[str, Any]] = (
        received_values(
            employer=employer,
            policy=policy,
            priced=priced,
            partner_id=partner_id,
            batch_id=batch_id,
            content_hash=content,
        )
        for priced, content in accepted
    )
    detail = f"received in batch {batch_id}"
    actor_label = actor.display[:120]
    if not bulk.supports_copy():
        created = Endorsement.objects.bulk_create([Endorsement(**v) for v in values], batch_size=2000)
        EndorsementHistory.objects.bulk_create(
            [
                EndorsementHistory(
                    endorsement_id=e.pk, from_status="", to_status=S.RECEIVED, detail=detail, actor=actor_label
                )
                for e in created
            ],
            batch_size=2000,
        )
        return [e.pk for e in created]
    ids = bulk.allocate_ids(Endorsement, len(accepted))
    now = timezone.now()
    bulk.copy_insert(Endorsement, COPY_COLUMNS, copy_rows(ids, values, now=now))
    bulk.copy_insert(
        EndorsementHistory,
        HISTORY_COLUMNS,
        ((pk, "", S.RECEIVED, detail, actor_label, now) for pk in ids),
    )
    return ids


@transaction.atomic
def endorsement_batch_cancel(*, batch: EndorsementBatch, actor: Actor) -> int:
    """Cancel every row of the batch not yet SENT (holds released); returns how many were cancelled."""
    rows = list(
        Endorsement.objects.select_for_update().filter(batch=batch, status__in=list(CANCELLABLE)).order_by("id")
    )
    held = {e.pk for e in rows if e.status == S.FUNDS_LOCKED}
    detail = f"batch cancelled by {actor.display}"
    transitions = _move_many([_Step(e, detail) for e in rows], S.CANCELLED, allowed_from=CANCELLABLE)
    by_id = {e.pk: e for e in rows}
    finished = [by_id[t.endorsement_id] for t in transitions]
    _release_holds([(e, "batch cancelled") for e in finished if e.pk in held], actor=actor)
    EndorsementBatch.objects.filter(pk=batch.pk, cancelled_at__isnull=True).update(cancelled_at=timezone.now())
    _record(transitions, actor=actor, endorsements={e.pk: e for e in rows})
    _on_terminal(finished)
    return len(transitions)
