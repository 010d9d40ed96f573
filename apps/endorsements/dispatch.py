"""What the insurer receives for each endorsement (read-only; built outside any transaction), and the retry
budget of a dispatch (ADR 0025).

Dispatch events carry **no ordering key**: per-member order is already kept upstream —
`endorsements_process` holds a member's next endorsement on a policy until the previous one is terminal —
so at most one endorsement per member per policy is ever SENT, and two dispatch batches never need each
other's order. One key per insurer serialised the insurer's whole queue behind one leased message (issue 10).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta

from django.conf import settings
from django.utils import timezone

from apps.employers.selectors import employees_for
from apps.endorsements.models import Endorsement, EndorsementStatus, EndorsementType
from apps.insurers.contracts import EndorsementSubmission, MemberData


def submissions_for(*, ids: Sequence[int]) -> list[EndorsementSubmission]:
    """SENT endorsements among `ids`, in the given order (credits were put first by the scheduler)."""
    rows = {
        e.pk: e for e in Endorsement.objects.filter(pk__in=ids, status=EndorsementStatus.SENT).select_related("policy")
    }
    codes = {(e.employer_id, e.employee_code) for e in rows.values() if e.type != EndorsementType.ADDITION}
    employees = employees_for(members=codes)
    out = []
    for pk in ids:
        e = rows.get(pk)
        if e is None:
            continue
        details = dict(e.details)
        base = employees.get((e.employer_id, e.employee_code))
        member = {
            "first_name": base.first_name if base else "",
            "last_name": base.last_name if base else "",
            "date_of_birth": base.date_of_birth if base else None,
            "gender": base.gender if base else "",
            "email": base.email if base else "",
        }
        member.update({k: v for k, v in details.items() if k in member})
        dob = member["date_of_birth"]
        out.append(
            EndorsementSubmission(
                endorsement_id=e.pk,
                idempotency_key=e.idempotency_key,
                kind=e.type,  # type: ignore[arg-type]
                policy_number=e.policy.policy_number,
                effective_date=e.effective_date,
                member=MemberData(
                    employee_code=e.employee_code,
                    first_name=str(member["first_name"]),
                    last_name=str(member["last_name"]),
                    date_of_birth=date.fromisoformat(dob) if isinstance(dob, str) else dob,  # type: ignore[arg-type]
                    gender=str(member["gender"]),
                    email=str(member["email"]),
                ),
                sum_insured=e.sum_insured or 0,
                premium_amount=e.premium_amount,
                premium_direction=e.premium_direction,  # type: ignore[arg-type]
            )
        )
    return out


def send_max_attempts() -> int:
    """Failed insurer calls one dispatch may make (ENDORSEMENT_SEND_MAX_ATTEMPTS)."""
    return max(1, int(settings.ENDORSEMENT_SEND_MAX_ATTEMPTS))


def send_budget_spent(*, failed_attempts: int, first_sent_at: datetime, now: datetime | None = None) -> str:
    """Why a dispatch's retry budget is spent, or "" while it is not (ADR 0025).

    `failed_attempts` counts calls that reached the insurer and failed (deferrals by our own breaker or rate
    limit are not attempts); `first_sent_at` is when the batch went SENT (its dispatch event's creation).
    Spent when either ENDORSEMENT_SEND_MAX_ATTEMPTS or ENDORSEMENT_SEND_MAX_HOURS is used up.
    """
    now = now or timezone.now()
    if failed_attempts >= send_max_attempts():
        return f"{failed_attempts} failed attempts"
    budget = timedelta(hours=float(settings.ENDORSEMENT_SEND_MAX_HOURS))
    if now - first_sent_at >= budget:
        return f"retried for {(now - first_sent_at).total_seconds() / 3600:.1f} h"
    return ""
