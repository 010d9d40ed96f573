"""How an endorsement changes status (SPEC §7): a conditional UPDATE on the current status, recorded in its
history, the audit log and the partner events, in the caller's transaction; and what reaching a terminal
state sets off (the member's next endorsement, the batch's completion).

Shared by every stage of the pipeline; the member locks that serialise work on one member live here too.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from django.db import connection, models
from django.utils import timezone

from apps.audit.services import AuditEntry, audit_record_many
from apps.common import bulk
from apps.common.actors import Actor
from apps.endorsements.contracts import EndorsementAuditAction, EndorsementTopic
from apps.endorsements.events import batch_completed_events_record, endorsement_events_record
from apps.endorsements.models import TERMINAL, Endorsement, EndorsementBatch, EndorsementHistory, EndorsementStatus
from apps.outbox.services import outbox_enqueue

S = EndorsementStatus

# The audit action written when an endorsement reaches each status (one member each: grep finds them all).
AUDIT_ACTION_OF: dict[str, EndorsementAuditAction] = {
    S.RECEIVED: EndorsementAuditAction.RECEIVED,
    S.VALIDATED: EndorsementAuditAction.VALIDATED,
    S.ON_HOLD_FUNDS: EndorsementAuditAction.ON_HOLD_FUNDS,
    S.ON_HOLD_REVIEW: EndorsementAuditAction.ON_HOLD_REVIEW,
    S.FUNDS_LOCKED: EndorsementAuditAction.FUNDS_LOCKED,
    S.SENT: EndorsementAuditAction.SENT,
    S.CONFIRMED: EndorsementAuditAction.CONFIRMED,
    S.ACTIVE: EndorsementAuditAction.ACTIVE,
    S.REJECTED: EndorsementAuditAction.REJECTED,
    S.FAILED: EndorsementAuditAction.FAILED,
    S.CANCELLED: EndorsementAuditAction.CANCELLED,
}


# The columns of a history row written by `COPY` (the id comes from the table's default).
HISTORY_COLUMNS = ("endorsement_id", "from_status", "to_status", "detail", "actor", "at")


def _today() -> date:
    return timezone.localdate()


# --- locking -------------------------------------------------------------------------------------------------


# Above this many members one transaction takes the policy's lock exclusively instead of one lock per member:
# PostgreSQL's shared lock table holds `max_locks_per_transaction` × connections entries (64 × 100 by default),
# and a 50,000-row upload took 50,000 advisory locks — "out of shared memory" (issue 15 part 4).
MEMBER_LOCKS_MAX = 2_000


def _lock_members(policy_id: int, employee_codes: Iterable[str]) -> None:
    """Serialise work on the same members (policy, employee_code) across requests and workers.

    PostgreSQL: transaction-scoped advisory locks in two levels, in one statement:
    1. the policy's lock — shared by every caller with at most `MEMBER_LOCKS_MAX` members, exclusive for more;
    2. then (shared callers only) one lock per member, in sorted order, so two callers cannot deadlock.
    A large batch thus holds one lock and excludes all member work on its policy while it runs; everything
    else still excludes only the same members (the chunks of a batch run in parallel, ADR 0043).
    SQLite has a single writer, so the write transaction itself serialises.
    """
    if connection.vendor != "postgresql":
        return
    keys = sorted({_member_lock_key(policy_id, code) for code in employee_codes})
    if not keys:
        return
    policy_key = _policy_lock_key(policy_id)
    with connection.cursor() as cursor:
        if len(keys) > MEMBER_LOCKS_MAX:
            cursor.execute("SELECT pg_advisory_xact_lock(%s::bigint)", [policy_key])
        elif len(keys) == 1:
            # Left to right: the shared policy lock, then the member's.
            cursor.execute(
                "SELECT pg_advisory_xact_lock_shared(%s::bigint), pg_advisory_xact_lock(%s::bigint)",
                [policy_key, keys[0]],
            )
        else:
            # The member locks are computed per row of the join, so only after `p` took the policy lock.
            cursor.execute(
                "WITH p AS MATERIALIZED (SELECT pg_advisory_xact_lock_shared(%s::bigint)) "
                "SELECT pg_advisory_xact_lock(k) FROM p, unnest(%s::bigint[]) AS k ORDER BY k",
                [policy_key, keys],
            )


def _policy_lock_key(policy_id: int) -> int:
    return _advisory_key(f"policy-members:{policy_id}")


def _member_lock_key(policy_id: int, employee_code: str) -> int:
    return _advisory_key(f"{policy_id}:{employee_code}")


def _advisory_key(name: str) -> int:
    """A PostgreSQL advisory lock key (signed bigint) for `name`: the first 8 bytes of its BLAKE2b digest."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


# --- transitions ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transition:
    """One status change that happened: `from_status` is "" for a new endorsement (RECEIVED)."""

    endorsement_id: int
    from_status: str
    to_status: str
    detail: str


def _record(transitions: Sequence[Transition], *, actor: Actor, endorsements: dict[int, Endorsement]) -> None:
    """History rows, audit events and partner events for transitions that already happened (one bulk insert
    each; the history rows by `COPY` on PostgreSQL: no model instance per row)."""
    if not transitions:
        return
    label = actor.display[:120]
    if bulk.supports_copy() and len(transitions) >= bulk.COPY_MIN_ROWS:  # one INSERT beats COPY for a few rows
        now = timezone.now()
        bulk.copy_insert(
            EndorsementHistory,
            HISTORY_COLUMNS,
            ((t.endorsement_id, t.from_status, t.to_status, t.detail[:500], label, now) for t in transitions),
        )
    else:
        bulk.copy_create(  # fewer than COPY_MIN_ROWS: `bulk_create`, or the cached INSERT for one row
            [
                EndorsementHistory(
                    endorsement_id=t.endorsement_id,
                    from_status=t.from_status,
                    to_status=t.to_status,
                    detail=t.detail[:500],
                    actor=label,
                )
                for t in transitions
            ],
            batch_size=1000,
        )
    audit_record_many(
        actor=actor,
        entries=[
            AuditEntry(
                action=AUDIT_ACTION_OF[t.to_status],
                object_type="endorsement",
                object_id=t.endorsement_id,
                employer_id=endorsements[t.endorsement_id].employer_id,
                before={"status": t.from_status} if t.from_status else None,
                after={"status": t.to_status, **({"detail": t.detail} if t.detail else {})},
            )
            for t in transitions
        ],
    )
    endorsement_events_record(transitions, endorsements)  # partner events (SPEC §10, issue 13)


@dataclass(slots=True)
class _Step:
    """One endorsement's part in a `_move_many`: its history detail and its own column values."""

    endorsement: Endorsement
    detail: str = ""
    fields: dict[str, Any] = field(default_factory=dict)


FAILED_STATES = frozenset({S.FAILED, S.REJECTED})


def _clear_failure(to: str, allowed_from: Iterable[str], values: dict[str, Any]) -> dict[str, Any]:
    """`values` plus an empty `rejection_class` and `rejection_reason` when the move may leave FAILED/REJECTED
    for a state that is not a failure (a retry, an accepted late confirmation): an endorsement that ends
    ACTIVE never shows the reason it once failed for (issue 11). Values the caller gives win."""
    if to in FAILED_STATES or not FAILED_STATES.intersection(allowed_from):
        return values
    return {"rejection_class": "", "rejection_reason": "", **values}


def _move_many(steps: Sequence[_Step], to: str, *, allowed_from: Iterable[str], **common: Any) -> list[Transition]:
    """`_move` for many endorsements in three statements instead of one UPDATE each.

    1. Lock the rows still in `allowed_from` (SELECT … FOR UPDATE, id order): the others lost a race and are
       left out, exactly as a conditional UPDATE that matched no row.
    2. One UPDATE moves the locked rows to `to` with the values common to all (`common`).
    3. One bulk UPDATE writes each row's own values (`_Step.fields`), if any.
    """
    if not steps:
        return []
    allowed = list(allowed_from)
    common = _clear_failure(to, allowed, common)
    by_id = {s.endorsement.pk: s for s in steps}
    movable: list[int] = []
    ids = sorted(by_id)
    for start in range(0, len(ids), 1000):
        movable += (
            Endorsement.objects.select_for_update()
            .filter(pk__in=ids[start : start + 1000], status__in=allowed)
            .order_by("id")
            .values_list("pk", flat=True)
        )
    if not movable:
        return []
    now = timezone.now()
    transitions: list[Transition] = []
    own: set[str] = set()
    for pk in movable:
        step = by_id[pk]
        e = step.endorsement
        transitions.append(Transition(pk, e.status, to, step.detail))
        e.status = to
        e.updated_at = now
        for name, value in (common | step.fields).items():
            setattr(e, name, value)
        own.update(step.fields)
    if own and connection.vendor == "postgresql":
        # One statement per chunk writes the move and each row's own values (no second pass over the rows).
        for start in range(0, len(movable), MOVE_CHUNK):
            _update_own(
                [by_id[pk].endorsement for pk in movable[start : start + MOVE_CHUNK]],
                sorted(own),
                common={"status": to, "updated_at": now, **common},
            )
        return transitions
    for start in range(0, len(movable), 1000):
        Endorsement.objects.filter(pk__in=movable[start : start + 1000]).update(status=to, updated_at=now, **common)
    if own:
        with_own = [by_id[pk].endorsement for pk in movable if by_id[pk].fields]
        bulk.bulk_update(with_own, sorted(own))
    return transitions


MOVE_CHUNK = 5000


def _update_own(rows: Sequence[Endorsement], own: Sequence[str], *, common: dict[str, Any]) -> None:
    """PostgreSQL: `UPDATE … SET <common> = %s, <own> = v.<own> FROM unnest(<binary arrays>) WHERE id = v.id` —
    the rows' own values (already set on the instances) in binary arrays, which psycopg dumps without quoting
    each string."""
    meta = Endorsement._meta
    qn = connection.ops.quote_name

    def column(name: str) -> models.Field[Any, Any]:
        f = meta.get_field(name)
        assert isinstance(f, models.Field)
        return f

    own_fields = [column(name) for name in own]
    common_fields = [column(name) for name in common]
    arrays = ", ".join(["%b::bigint[]"] + [f"%b::{f.db_type(connection)}[]" for f in own_fields])
    names = ", ".join(["id"] + [qn(str(f.column)) for f in own_fields])
    assignments = [f"{qn(str(f.column))} = %s" for f in common_fields] + [
        f"{qn(str(f.column))} = v.{qn(str(f.column))}" for f in own_fields
    ]
    table = qn(meta.db_table)
    sql = (
        f"UPDATE {table} SET {', '.join(assignments)} FROM unnest({arrays}) AS v({names}) "  # noqa: S608 - identifiers only
        f"WHERE {table}.id = v.id"
    )
    params: list[Any] = [f.get_db_prep_save(common[f.name], connection) for f in common_fields]
    params.append([e.pk for e in rows])
    for f in own_fields:
        params.append([f.get_db_prep_save(getattr(e, f.attname), connection) for e in rows])
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _move(
    endorsement: Endorsement, to: str, *, allowed_from: Iterable[str], detail: str = "", **fields: Any
) -> Transition | None:
    """Conditional transition: UPDATE … WHERE id = … AND status IN allowed_from. None if it lost a race."""
    previous = endorsement.status
    allowed = list(allowed_from)
    fields = _clear_failure(to, allowed, fields)
    updated = Endorsement.objects.filter(pk=endorsement.pk, status__in=allowed).update(
        status=to, updated_at=timezone.now(), **fields
    )
    if updated != 1:
        return None
    endorsement.status = to
    for name, value in fields.items():
        setattr(endorsement, name, value)
    return Transition(endorsement.pk, previous, to, detail)


# --- terminal states -----------------------------------------------------------------------------------------


def _on_terminal(finished: Sequence[Endorsement]) -> None:
    """Wake each member's next waiting endorsement; mark batches whose rows are all terminal as completed."""
    codes_by_policy: dict[int, set[str]] = defaultdict(set)
    for e in finished:
        codes_by_policy[e.policy_id].add(e.employee_code)
    for policy_id, codes in sorted(codes_by_policy.items()):
        waiting = (
            Endorsement.objects.filter(policy_id=policy_id, employee_code__in=sorted(codes), status=S.RECEIVED)
            .order_by("id")
            .only("id", "policy_id", "employee_code")
        )
        woken: set[str] = set()
        for nxt in waiting:
            if nxt.employee_code not in woken:
                woken.add(nxt.employee_code)
                outbox_enqueue(topic=EndorsementTopic.PROCESS, payload={"ids": [nxt.pk]}, key=nxt.member_key)
    for batch_id in {e.batch_id for e in finished if e.batch_id}:
        all_terminal = not Endorsement.objects.filter(batch_id=batch_id).exclude(status__in=TERMINAL).exists()
        if all_terminal and EndorsementBatch.objects.filter(pk=batch_id, completed_at__isnull=True).update(
            completed_at=timezone.now()
        ):
            batch_completed_events_record([batch_id])  # partner event (SPEC §10, issue 13)
