"""The sandbox insurer's roster (reconciliation, issue 12; ADR 0040): load it, make it drift, serve it by page.

Pages are keyset-paginated on `employee_code` with an opaque cursor (base64url JSON `{"after": code,
"page": n}`), so a page costs one index range scan however deep it is, and a client that resumes from a
cursor it kept gets exactly the rows after it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from email.utils import format_datetime
from typing import Any

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from apps.common.money import to_minor
from apps.insurers.sandbox.models import SandboxCharge, SandboxRosterControl, SandboxRosterMember

MAX_PAGE_SIZE = 5000


class RosterCursorError(ValueError):
    pass


def roster_cursor_encode(*, after: str, page: int) -> str:
    raw = json.dumps({"after": after, "page": page}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def roster_cursor_decode(cursor: str) -> tuple[str, int]:
    """`(after, page)` of a cursor; `("", 1)` for none. Raises `RosterCursorError` for a malformed one."""
    if not cursor:
        return "", 1
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        return str(data["after"]), int(data["page"])
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise RosterCursorError("malformed cursor") from exc


def sandbox_roster_load(*, code: str, policy_number: str, members: Iterable[Mapping[str, Any]]) -> int:
    """Upsert members (`employee_code, first_name, last_name, date_of_birth, sum_insured` in paise,
    `start_date`) into sandbox `code`'s roster of `policy_number`; returns how many were written."""
    rows = [
        SandboxRosterMember(code=code, policy_number=policy_number, **{k: m[k] for k in _MEMBER_FIELDS})
        for m in members
    ]
    SandboxRosterMember.objects.bulk_create(
        rows,
        batch_size=1000,
        update_conflicts=True,
        unique_fields=["code", "policy_number", "employee_code"],
        update_fields=[f for f in _MEMBER_FIELDS if f != "employee_code"],
    )
    return len(rows)


_MEMBER_FIELDS = ("employee_code", "first_name", "last_name", "date_of_birth", "sum_insured", "start_date")


def sandbox_roster_drop(*, code: str, policy_number: str, employee_code: str) -> int:
    """Drift: the insurer loses a member. Returns the number of rows removed (0 or 1)."""
    deleted, _ = SandboxRosterMember.objects.filter(
        code=code, policy_number=policy_number, employee_code=employee_code
    ).delete()
    return deleted


def sandbox_roster_change(*, code: str, policy_number: str, employee_code: str, **fields: Any) -> int:
    """Drift: the insurer's record of a member changes (e.g. `date_of_birth=date(...)`). Returns rows changed."""
    unknown = set(fields) - set(_MEMBER_FIELDS[1:])
    if unknown:
        raise ValueError(f"unknown roster fields: {sorted(unknown)}")
    return SandboxRosterMember.objects.filter(
        code=code, policy_number=policy_number, employee_code=employee_code
    ).update(**fields)


def sandbox_roster_control(
    *,
    code: str,
    throttle_every: int = 0,
    retry_after_seconds: int = 1,
    retry_after_http_date: bool = False,
    failures: int = 0,
) -> SandboxRosterControl:
    """Set how sandbox `code`'s roster API misbehaves (see `SandboxRosterControl`); forgets pages throttled
    before."""
    control, _ = SandboxRosterControl.objects.update_or_create(
        code=code,
        defaults={
            "throttle_every": throttle_every,
            "retry_after_seconds": retry_after_seconds,
            "retry_after_http_date": retry_after_http_date,
            "failures_remaining": failures,
            "throttled_pages": [],
        },
    )
    return control


def _member_json(member: SandboxRosterMember) -> dict[str, Any]:
    return {
        "employee_code": member.employee_code,
        "first_name": member.first_name,
        "last_name": member.last_name,
        "date_of_birth": member.date_of_birth.isoformat(),
        "sum_insured": member.sum_insured,
        "start_date": member.start_date.isoformat(),
    }


def roster_misbehaviour(*, code: str, page: int) -> tuple[int, str] | None:
    """`(status, Retry-After)` when this request must fail (503 transient, or 429 once for a throttled page),
    else None. Steps: 1. take the control row FOR UPDATE (one request decides at a time); 2. spend one
    scripted failure if any is left; 3. throttle a page whose number is a multiple of `throttle_every`, once."""
    with transaction.atomic():
        control = SandboxRosterControl.objects.select_for_update().filter(code=code).first()
        if control is None:
            return None
        if control.failures_remaining:
            SandboxRosterControl.objects.filter(pk=control.pk).update(failures_remaining=F("failures_remaining") - 1)
            return 503, "0"
        if control.throttle_every and page % control.throttle_every == 0 and page not in control.throttled_pages:
            control.throttled_pages = [*control.throttled_pages, page]
            control.save(update_fields=["throttled_pages"])
            seconds = control.retry_after_seconds
            if control.retry_after_http_date:
                # An HTTP date has whole seconds: round up, so that the client never waits less than asked.
                when = (timezone.now() + timedelta(seconds=seconds + 1)).replace(microsecond=0)
                return 429, format_datetime(when, usegmt=True)
            return 429, str(seconds)
    return None


def roster_page(*, code: str, policy_number: str, cursor: str, limit: int) -> dict[str, Any]:
    """One page: `{"members": [...], "page": n, "next_cursor": str | None}` (dates ISO, sums in paise), plus
    `"total"` (members of the policy) on the first page."""
    after, page = roster_cursor_decode(cursor)
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    members = list(
        SandboxRosterMember.objects.filter(code=code, policy_number=policy_number, employee_code__gt=after).order_by(
            "employee_code"
        )[: limit + 1]
    )
    has_more = len(members) > limit
    members = members[:limit]
    next_cursor = roster_cursor_encode(after=members[-1].employee_code, page=page + 1) if has_more else None
    body: dict[str, Any] = {"members": [_member_json(m) for m in members], "page": page, "next_cursor": next_cursor}
    if not after:
        # The first page says how many members the policy has, so the client can show progress.
        body["total"] = SandboxRosterMember.objects.filter(code=code, policy_number=policy_number).count()
    return body


def parse_member(raw: Mapping[str, Any]) -> dict[str, Any]:
    """A roster member as served, back into Python values (used by tests)."""
    return {
        **raw,
        "date_of_birth": date.fromisoformat(raw["date_of_birth"]),
        "start_date": date.fromisoformat(raw["start_date"]),
    }


# --- The statement of charges (its CD-account view) ---------------------------------------------------------


def charges_record(*, code: str, items: Iterable[Any], confirmed_keys: set[str]) -> None:
    """Record the charge of every newly confirmed item with an endorsement id and a non-zero premium (inside
    `sandbox_apply`'s transaction; a replayed key was confirmed before and records nothing)."""
    rows = [
        SandboxCharge(code=code, policy_number=i.policy_number, endorsement_id=i.endorsement_id, amount=i.charge)
        for i in items
        # Endorsement id 0 is a reconciliation resend (no Keel endorsement): the statement is per endorsement.
        if i.idempotency_key in confirmed_keys and i.endorsement_id and i.charge
    ]
    SandboxCharge.objects.bulk_create(rows, batch_size=1000, ignore_conflicts=True)


def sandbox_charge_change(*, code: str, endorsement_id: int, amount: int) -> int:
    """Drift: the insurer charges a wrong amount (paise) for an endorsement. Returns rows changed."""
    return SandboxCharge.objects.filter(code=code, endorsement_id=endorsement_id).update(amount=amount)


def sandbox_charge_drop(*, code: str, endorsement_id: int) -> int:
    """Drift: the insurer never charged an endorsement. Returns rows removed."""
    deleted, _ = SandboxCharge.objects.filter(code=code, endorsement_id=endorsement_id).delete()
    return deleted


def statement_page(*, code: str, policy_number: str, cursor: str, limit: int) -> dict[str, Any]:
    """One keyset page of the statement, `{"charges": [{endorsement_id, amount}], "page", "next_cursor"}`."""
    after, page = roster_cursor_decode(cursor)
    limit = max(1, min(limit, MAX_PAGE_SIZE))
    charges = list(
        SandboxCharge.objects.filter(
            code=code, policy_number=policy_number, endorsement_id__gt=int(after or 0)
        ).order_by("endorsement_id")[: limit + 1]
    )
    has_more = len(charges) > limit
    charges = charges[:limit]
    next_cursor = roster_cursor_encode(after=str(charges[-1].endorsement_id), page=page + 1) if has_more else None
    return {
        "charges": [{"endorsement_id": c.endorsement_id, "amount": c.amount} for c in charges],
        "page": page,
        "next_cursor": next_cursor,
    }


def roster_follow(*, code: str, items: Iterable[Any], confirmed_keys: set[str]) -> None:
    """The roster follows what the sandbox newly confirmed (inside `sandbox_apply`'s transaction): an addition
    adds the member (start = effective date), a correction updates it, a deletion removes it. Items without
    the member's names, date of birth or sum insured (a hand-written request) leave it unchanged."""
    upserts: dict[tuple[str, str], SandboxRosterMember] = {}
    corrections: list[Any] = []
    for item in items:
        if item.idempotency_key not in confirmed_keys or not item.employee_code or not item.policy_number:
            continue
        if item.kind == "deletion":
            SandboxRosterMember.objects.filter(
                code=code, policy_number=item.policy_number, employee_code=item.employee_code
            ).delete()
            continue
        complete = item.first_name and item.date_of_birth is not None and item.sum_insured is not None
        if not complete:
            continue
        if item.kind == "addition":
            upserts[(item.policy_number, item.employee_code)] = SandboxRosterMember(
                code=code,
                policy_number=item.policy_number,
                employee_code=item.employee_code,
                first_name=item.first_name,
                last_name=item.last_name,
                date_of_birth=item.date_of_birth,
                sum_insured=item.sum_insured,
                start_date=item.effective_date,
            )
        elif item.kind == "correction":
            corrections.append(item)
    if upserts:
        SandboxRosterMember.objects.bulk_create(
            list(upserts.values()),
            batch_size=1000,
            update_conflicts=True,
            unique_fields=["code", "policy_number", "employee_code"],
            update_fields=["first_name", "last_name", "date_of_birth", "sum_insured", "start_date"],
        )
    for item in corrections:
        SandboxRosterMember.objects.filter(
            code=code, policy_number=item.policy_number, employee_code=item.employee_code
        ).update(
            first_name=item.first_name,
            last_name=item.last_name,
            date_of_birth=item.date_of_birth,
            sum_insured=item.sum_insured,
        )


# --- Drift from the command line (`manage.py sandbox_insurer --drift …`, issue 12) -------------------------

DRIFT_KINDS = ("drop_member", "change", "add_member", "charge_amount", "drop_charge")
DRIFT_HELP = (
    "drop_member:CODE | change:CODE:FIELD=VALUE (first_name, last_name, date_of_birth, start_date as "
    "YYYY-MM-DD, sum_insured in rupees) | add_member:CODE:FIRST:LAST:YYYY-MM-DD:RUPEES | "
    "charge_amount:ENDORSEMENT_ID:RUPEES | drop_charge:ENDORSEMENT_ID"
)


def _rupees_to_paise(text: str) -> int:
    return to_minor(text, allow_negative=True)


def sandbox_drift_apply(*, code: str, policy_number: str, spec: str) -> str:
    """Apply one drift written as `spec` (see `DRIFT_HELP`) to sandbox `code` (the member kinds on
    `policy_number`); returns what was done, in words. Raises `ValueError` for a spec it cannot read or a
    member or charge that is not there."""
    kind, _, rest = spec.partition(":")
    parts = rest.split(":") if rest else []
    try:
        if kind == "drop_member" and len(parts) == 1:
            done = sandbox_roster_drop(code=code, policy_number=policy_number, employee_code=parts[0])
            what = f"dropped member {parts[0]}"
        elif kind == "change" and len(parts) == 2 and "=" in parts[1]:
            field, _, value = parts[1].partition("=")
            converted: Any = value
            if field in ("date_of_birth", "start_date"):
                converted = date.fromisoformat(value)
            elif field == "sum_insured":
                converted = _rupees_to_paise(value)
            done = sandbox_roster_change(
                code=code, policy_number=policy_number, employee_code=parts[0], **{field: converted}
            )
            what = f"changed {parts[0]} {field} to {value}"
        elif kind == "add_member" and len(parts) == 5:
            employee_code, first, last, born, rupees = parts
            done = sandbox_roster_load(
                code=code,
                policy_number=policy_number,
                members=[
                    {
                        "employee_code": employee_code,
                        "first_name": first,
                        "last_name": last,
                        "date_of_birth": date.fromisoformat(born),
                        "sum_insured": _rupees_to_paise(rupees),
                        "start_date": timezone.localdate(),
                    }
                ],
            )
            what = f"added member {employee_code} (Keel does not cover it)"
        elif kind == "charge_amount" and len(parts) == 2:
            done = sandbox_charge_change(code=code, endorsement_id=int(parts[0]), amount=_rupees_to_paise(parts[1]))
            what = f"charged endorsement {parts[0]} {parts[1]}"
        elif kind == "drop_charge" and len(parts) == 1:
            done = sandbox_charge_drop(code=code, endorsement_id=int(parts[0]))
            what = f"dropped the charge of endorsement {parts[0]}"
        else:
            raise ValueError(f"cannot read drift {spec!r}: expected {DRIFT_HELP}")
    except (TypeError, ArithmeticError) as exc:
        raise ValueError(f"cannot read drift {spec!r}: {exc}") from exc
    if not done:
        raise ValueError(f"drift {spec!r} changed nothing: no such member or charge at {code} ({policy_number})")
    return what
