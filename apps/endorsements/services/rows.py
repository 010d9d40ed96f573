"""The stored form of a new endorsement, defined once: the column values of a RECEIVED row (used by the ORM
insert of a single request and of a batch, and by the PostgreSQL COPY of a batch), and the way back from a
stored row to the draft it came from.

A new column needs one edit: a model default (or a value in `received_values`). The COPY path writes every
concrete column of `Endorsement` — the values given, else the model's default (`auto_now`/`auto_now_add`
columns: the time of the insert) — so it cannot drift from the ORM path.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

from django.db import models

from apps.endorsements.models import Endorsement, EndorsementStatus, EndorsementType
from apps.endorsements.pricing import Priced
from apps.endorsements.validation import EndorsementDraft

if TYPE_CHECKING:
    from apps.employers.models import Employer, Policy


def received_values(
    *,
    employer: Employer,
    policy: Policy,
    priced: Priced,
    partner_id: int,
    batch_id: int | None,
    content_hash: str | None = None,
) -> dict[str, Any]:
    """Column values (by attribute name) of a new RECEIVED endorsement; money in paise. The other columns
    take their model defaults. `content_hash` is computed from the draft when not given."""
    d, q = priced.draft, priced.quote
    return {
        "employer_id": employer.pk,
        "policy_id": policy.pk,
        "insurer_id": policy.insurer_id,
        "partner_id": partner_id,
        "batch_id": batch_id,
        "type": d.type,
        "status": EndorsementStatus.RECEIVED,
        "employee_code": d.employee_code,
        "details": _jsonable(
            {**d.details, "sum_insured": d.sum_insured}
            if d.type == EndorsementType.CORRECTION and d.sum_insured is not None
            else d.details
        ),
        "effective_date": d.effective_date,
        "sum_insured": priced.sum_insured,
        "sum_insured_before": priced.sum_insured_before,
        "premium_amount": q.premium_amount,
        "premium_direction": q.premium_direction,
        "annual_premium": q.annual_premium,
        "remaining_days": q.remaining_days,
        "term_days": q.term_days,
        "content_hash": content_hash or d.content_hash(employer_id=employer.pk, policy_id=policy.pk),
        "idempotency_key": uuid.uuid4().hex,
    }


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, date) else v) for k, v in details.items()}


# Every concrete column of the table, in model order: (column, attribute name, stored as JSON text).
_COLUMNS: tuple[tuple[str, str, bool], ...] = tuple(
    (f.column, f.attname, isinstance(f, models.JSONField)) for f in Endorsement._meta.concrete_fields
)
COPY_COLUMNS: tuple[str, ...] = tuple(column for column, _, _ in _COLUMNS)


def _defaults(now: datetime) -> dict[str, Any]:
    """The value of each column a new row does not set: `now` for auto_now(_add) columns, else the model's."""
    return {
        f.attname: now if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False) else f.get_default()
        for f in Endorsement._meta.concrete_fields
        if not f.primary_key
    }


def copy_rows(ids: Sequence[int], values: Iterable[dict[str, Any]], *, now: datetime) -> Iterator[tuple[Any, ...]]:
    """Rows for `bulk.copy_insert(Endorsement, COPY_COLUMNS, …)`: `ids[i]` is the primary key of `values[i]`
    (from `received_values`); JSON columns as text, as COPY wants them."""
    defaults = _defaults(now)
    pk_attname = Endorsement._meta.pk.attname  # type: ignore[union-attr]
    for pk, v in zip(ids, values, strict=True):
        yield tuple(
            pk
            if attname == pk_attname
            else json.dumps(v.get(attname, defaults[attname]))
            if as_json
            else v.get(attname, defaults[attname])
            for _, attname, as_json in _COLUMNS
        )


def draft_of(e: Endorsement) -> EndorsementDraft:
    """The draft a stored endorsement was made from (the inverse of `received_values`): dates parsed back, a
    correction's requested sum insured taken out of its details."""
    details = dict(e.details)
    if "date_of_birth" in details and isinstance(details["date_of_birth"], str):
        details["date_of_birth"] = date.fromisoformat(details["date_of_birth"])
    if e.type == EndorsementType.ADDITION:
        requested_si = e.sum_insured
    elif e.type == EndorsementType.CORRECTION:
        requested_si = details.pop("sum_insured", None)
    else:
        requested_si = None
    return EndorsementDraft(
        type=e.type,
        employee_code=e.employee_code,
        effective_date=e.effective_date,
        details=details,
        sum_insured=requested_si,
    )
