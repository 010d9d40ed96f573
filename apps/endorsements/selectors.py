"""Reads of endorsements and batches, always through what the API key may see."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import Count, QuerySet
from django.http import Http404

from apps.common.ids import BIGINT_MAX
from apps.employers.selectors import EMPLOYERS_TABLE, employers_visible_to
from apps.endorsements.models import TERMINAL, Endorsement, EndorsementBatch, EndorsementHistory, EndorsementStatus
from apps.partners.contracts import Principal


def endorsements_visible_to(principal: Principal) -> QuerySet[Endorsement]:
    return Endorsement.objects.filter(employer__in=employers_visible_to(principal))


def _path_id(value: int | str) -> int:
    """An id from the URL; anything that is not a bigint id is 404 (issue 8, kind 1: ids in a path)."""
    try:
        pk = int(value)
    except (TypeError, ValueError):
        raise Http404
    if not 1 <= pk <= BIGINT_MAX:
        raise Http404
    return pk


def endorsement_get_for(principal: Principal, endorsement_id: int | str) -> Endorsement:
    pk = _path_id(endorsement_id)
    endorsement = endorsements_visible_to(principal).filter(pk=pk).first()
    if endorsement is None:
        raise Http404
    return endorsement


# What `GET /endorsements/{id}` shows (EndorsementDetailSerializer's fields) and the history columns it lists, in
# the models' field order: `Model.from_db` with a subset of fields takes the values in that order.
_DETAIL_SHOWN = {
    "id", "employer_id", "policy_id", "type", "status", "employee_code", "effective_date", "sum_insured",
    "premium_amount", "premium_direction", "batch_id", "insurer_reference", "rejection_class", "rejection_reason",
    "created_at", "updated_at",
}  # fmt: skip
_DETAIL_COLUMNS = tuple(f for f in Endorsement._meta.concrete_fields if f.attname in _DETAIL_SHOWN)
_HISTORY_COLUMNS = tuple(
    f for f in EndorsementHistory._meta.concrete_fields if f.attname in {"to_status", "at", "detail"}
)
_DETAIL_FIELDS = tuple(f.attname for f in _DETAIL_COLUMNS)
_HISTORY_FIELDS = tuple(f.attname for f in _HISTORY_COLUMNS)
_EMPLOYER_AT = _DETAIL_FIELDS.index("employer_id")
_DETAIL_SQL = (
    "SELECT "  # noqa: S608
    + ", ".join([*(f"e.{f.column}" for f in _DETAIL_COLUMNS)] + [f"h.{f.column}" for f in _HISTORY_COLUMNS])
    + f" FROM {Endorsement._meta.db_table} e JOIN {EMPLOYERS_TABLE} m ON m.id = e.employer_id"
    + f" LEFT JOIN {EndorsementHistory._meta.db_table} h ON h.endorsement_id = e.id"
    " WHERE e.id = %s AND m.partner_id = %s ORDER BY h.id"
)  # fmt: skip


def endorsement_detail_for(
    principal: Principal, endorsement_id: int | str
) -> tuple[Endorsement, list[EndorsementHistory]]:
    """The endorsement (only the fields `GET /endorsements/{id}` shows; the others are deferred) and its history
    in id order, if this key may see it (the rule of `endorsements_visible_to`); `Http404` otherwise.

    One hand-written statement on PostgreSQL (the endorsement joined to its employer and left-joined to its
    history): the ORM's two queries cost more than the rest of the request together (issue 15). Other
    databases take the ORM path (their drivers return dates as text, which the ORM converts)."""
    if connection.vendor != "postgresql":
        endorsement = endorsement_get_for(principal, endorsement_id)
        return endorsement, list(endorsement.history.all())
    pk = _path_id(endorsement_id)
    with connection.cursor() as cursor:
        cursor.execute(_DETAIL_SQL, [pk, principal.partner_id])
        rows = cursor.fetchall()
    if not rows or not (principal.all_employers or rows[0][_EMPLOYER_AT] in principal.employer_ids):
        raise Http404
    split = len(_DETAIL_FIELDS)
    endorsement = Endorsement.from_db(connection.alias, _DETAIL_FIELDS, rows[0][:split])
    history = [
        EndorsementHistory.from_db(connection.alias, _HISTORY_FIELDS, row[split:])
        for row in rows
        if row[-1] is not None  # no history row: the LEFT JOIN's NULLs (every history column is NOT NULL)
    ]
    return endorsement, history


def batches_visible_to(principal: Principal) -> QuerySet[EndorsementBatch]:
    return EndorsementBatch.objects.filter(employer__in=employers_visible_to(principal))


def batch_get_for(principal: Principal, batch_id: int | str) -> EndorsementBatch:
    pk = _path_id(batch_id)
    batch = EndorsementBatch.objects.filter(employer__in=employers_visible_to(principal), pk=pk).first()
    if batch is None:
        raise Http404
    return batch


def batch_progress(batch: EndorsementBatch) -> dict[str, Any]:
    """Counts per status (one GROUP BY) and the share of accepted rows in a terminal state (0–100)."""
    counts = dict(Endorsement.objects.filter(batch=batch).values_list("status").annotate(n=Count("*")).order_by())
    terminal = sum(n for status, n in counts.items() if status in TERMINAL)
    percent = 100.0 if batch.accepted == 0 else round(100.0 * terminal / batch.accepted, 2)
    return {"counts": counts, "percent_complete": percent}


# Endorsements that ended in one of these do not make a resubmission a duplicate: the partner may try again
# after a failure (SPEC §7; issue 8, kind 10).
NOT_DUPLICATED_BY = (EndorsementStatus.FAILED, EndorsementStatus.REJECTED, EndorsementStatus.CANCELLED)

_DUPLICATE_SQL = f"""
SELECT id FROM {Endorsement._meta.db_table}
 WHERE employer_id = %s AND content_hash = %s AND created_at >= %s AND NOT (status = ANY(%s))
 ORDER BY id LIMIT 1
"""  # noqa: S608 - the table name from model metadata; every value is a bound parameter


def endorsement_duplicate_of(*, employer_id: int, content_hash: str, since: datetime) -> int | None:
    """The first endorsement of this employer with the same content received since `since` that did not end
    FAILED, REJECTED or CANCELLED, if any. Plain SQL on PostgreSQL: it runs on every single
    `POST /endorsements` (ADR 0013)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(_DUPLICATE_SQL, [employer_id, content_hash, since, [str(s) for s in NOT_DUPLICATED_BY]])
            row = cursor.fetchone()
        return int(row[0]) if row else None
    return (
        Endorsement.objects.filter(employer_id=employer_id, content_hash=content_hash, created_at__gte=since)
        .exclude(status__in=NOT_DUPLICATED_BY)
        .order_by("id")
        .values_list("id", flat=True)
        .first()
    )


def endorsement_ids_of_policy(policy_id: int) -> QuerySet[Endorsement, Any]:
    """An unevaluated `values("pk")` queryset of the policy's endorsements, for a higher app's subquery."""
    return Endorsement.objects.filter(policy_id=policy_id).values("pk")
