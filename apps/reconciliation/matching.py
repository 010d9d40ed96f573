"""The two-way match of one policy (issue 12, ADR 0040): Keel's active coverage against the insurer's roster
as the run saw it, on `employee_code`, then field by field. Both sides stream in employee-code order and are
merge-joined, so memory holds one chunk of each side and one batch of discrepancies.

Both sides are judged at the time the insurer's data was read (ADR 0063): a difference that involves a Keel
member or endorsement written after that time (cover started or ended, a detail or sum insured changed, money
captured or refunded) is not written; it counts as `changed_during_run`, and the next run judges it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterator
from datetime import date, datetime
from typing import Any

from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.common.bulk import copy_create
from apps.reconciliation.contracts import MONEY_KINDS, ResolutionAction
from apps.reconciliation.models import (
    Discrepancy,
    DiscrepancyKind,
    DiscrepancySeverity,
    DiscrepancyStatus,
    ReconciliationRun,
)
from apps.reconciliation.selectors import (
    KeelMember,
    MemberRecord,
    PolicyScope,
    endorsement_employee_codes,
    insurer_members,
    keel_charges,
    keel_members,
    roster_read_at,
)

COMPARED_FIELDS = ("first_name", "last_name", "date_of_birth", "sum_insured", "start_date")
FIELD_SEVERITY = {
    "first_name": DiscrepancySeverity.LOW,
    "last_name": DiscrepancySeverity.LOW,
    "date_of_birth": DiscrepancySeverity.MEDIUM,
    "start_date": DiscrepancySeverity.MEDIUM,
    "sum_insured": DiscrepancySeverity.HIGH,
}
BATCH = 1000
MEMBER_KINDS = (DiscrepancyKind.MISSING_AT_INSURER, DiscrepancyKind.MISSING_INTERNALLY, DiscrepancyKind.FIELD_MISMATCH)
# The summary count of differences left out because Keel's side changed after the insurer's data was read.
CHANGED_DURING_RUN = "changed_during_run"


def _json(value: Any) -> Any:
    return value.isoformat() if isinstance(value, date) else value


def _record_json(member: MemberRecord) -> dict[str, Any]:
    record = {f: _json(getattr(member, f)) for f in ("employee_code", *COMPARED_FIELDS)}
    if member.gender:
        record["gender"] = member.gender  # the insurer sent it: `create_addition` needs no gender then
    return record


def _norm(field: str, value: Any) -> Any:
    # Names compare without case or surrounding blanks: the insurer's systems upper-case them.
    return value.strip().casefold() if field in ("first_name", "last_name") and isinstance(value, str) else value


def _pairs(
    keel: Iterator[KeelMember], insurer: Iterator[MemberRecord]
) -> Iterator[tuple[KeelMember | None, MemberRecord | None]]:
    """Merge-join two streams ordered by employee code."""
    k, i = next(keel, None), next(insurer, None)
    while k is not None or i is not None:
        if i is None or (k is not None and k.employee_code < i.employee_code):
            yield k, None
            k = next(keel, None)
        elif k is None or i.employee_code < k.employee_code:
            yield None, i
            i = next(insurer, None)
        else:
            yield k, i
            k, i = next(keel, None), next(insurer, None)


def _accepted_before(batch: list[Discrepancy]) -> set[tuple[int, str]]:
    """`(policy id, key)` of the batch's differences an operator already settled in an earlier run with the
    same two values: ignored (with a note) or flagged for finance. Such a difference is not written again
    (ADR 0045): it is counted as `accepted` until either side changes."""
    if not batch:
        return set()
    keys = {d.key for d in batch}
    policy_ids = {d.policy_id for d in batch}
    settled = Discrepancy.objects.filter(
        Q(status=DiscrepancyStatus.IGNORED) | Q(resolution_action=ResolutionAction.FLAG_FOR_FINANCE),
        policy_id__in=policy_ids,
        key__in=keys,
    ).values_list("policy_id", "key", "keel_value", "insurer_value")
    values = {(policy_id, key): (keel, insurer) for policy_id, key, keel, insurer in settled}
    return {(d.policy_id, d.key) for d in batch if values.get((d.policy_id, d.key)) == (d.keel_value, d.insurer_value)}


def _first_pass(run: ReconciliationRun, scope: PolicyScope, kinds: Collection[str]) -> bool:
    """True when the run has written no discrepancy of `kinds` for the policy yet: this pass cannot meet a key it
    wrote before, so its batches may be COPied. A resumed run re-matching a policy answers False."""
    return not Discrepancy.objects.filter(run=run, policy_id=scope.policy_id, kind__in=kinds).exists()


def _flush(batch: list[Discrepancy], counts: Counter[str], *, first_pass: bool = False) -> None:
    """Write the batch once per run and key, leaving out differences settled before (their count moves from
    their kind to `accepted`). On the run's first pass over a policy the rows go in by `COPY` (`copy_create`,
    ADR 0051); otherwise `INSERT … ON CONFLICT DO NOTHING` keeps a re-match from writing a key twice."""
    accepted = _accepted_before(batch)
    fresh = [d for d in batch if (d.policy_id, d.key) not in accepted]
    for d in batch:
        if (d.policy_id, d.key) in accepted:
            counts[d.kind] -= 1
            counts["accepted"] += 1
    with transaction.atomic():
        if first_pass:
            copy_create(fresh)
        else:
            Discrepancy.objects.bulk_create(fresh, ignore_conflicts=True)
    batch.clear()


# long: one merge walk over two ordered member streams with its batch and counters; split, the cursors and
# the batch would travel through each piece.
def policy_match(
    *,
    run: ReconciliationRun,
    scope: PolicyScope,
    heartbeat: Callable[[], None] = lambda: None,
    as_of: datetime | None = None,
) -> Counter[str]:
    """Match one policy and write its `Discrepancy` rows (once per run and key, so a re-match adds nothing).

    `as_of`: when the insurer's roster was read (default: the run's `insurer_read_at` of the policy,
    `roster_read_at`). A member whose Keel cover or details were written after `as_of` and who differs from the
    roster (missing on either side, or a field unequal) is not written: it counts once as `changed_during_run`
    (ADR 0063). Returns counts by kind plus `matched` (members Keel covers now and the roster holds, every
    compared field equal) and `changed_during_run`. Keys: `member:<code>` for a missing member,
    `field:<code>:<field>` for a field mismatch. `heartbeat` is called after every written batch (the runner's
    keeps the run's lock alive, at most one refresh per 15 s).
    """
    counts: Counter[str] = Counter()
    batch: list[Discrepancy] = []
    common = {"run": run, "employer_id": scope.employer_id, "policy_id": scope.policy_id}
    first_pass = _first_pass(run, scope, MEMBER_KINDS)
    as_of = as_of or roster_read_at(run_id=run.pk, policy_id=scope.policy_id)
    keel = keel_members(policy_id=scope.policy_id, as_of=as_of)
    insurer = insurer_members(run_id=run.pk, insurer_id=run.insurer_id, policy_id=scope.policy_id)
    matched_in_batch = 0
    for member, theirs in _pairs(keel, insurer):
        ours = member.record if member is not None else None
        if ours is None and theirs is None:
            continue  # cover ended after the read, and the roster no longer holds it either: nothing to judge
        differing = (
            [f for f in COMPARED_FIELDS if _norm(f, getattr(ours, f)) != _norm(f, getattr(theirs, f))]
            if ours is not None and theirs is not None
            else None  # one side has no member
        )
        if differing != [] and member is not None and member.changed:
            counts[CHANGED_DURING_RUN] += 1  # Keel moved after the read: not judged by this run
        elif theirs is None and ours is not None:
            kind = DiscrepancyKind.MISSING_AT_INSURER
            batch.append(
                Discrepancy(
                    **common,
                    employee_code=ours.employee_code,
                    kind=kind,
                    severity=DiscrepancySeverity.HIGH,
                    keel_value=_record_json(ours),
                    insurer_value=None,
                    key=f"member:{ours.employee_code}",
                )
            )
            counts[kind] += 1
        elif ours is None and theirs is not None:
            kind = DiscrepancyKind.MISSING_INTERNALLY
            batch.append(
                Discrepancy(
                    **common,
                    employee_code=theirs.employee_code,
                    kind=kind,
                    severity=DiscrepancySeverity.HIGH,
                    keel_value=None,
                    insurer_value=_record_json(theirs),
                    key=f"member:{theirs.employee_code}",
                )
            )
            counts[kind] += 1
        elif ours is not None and theirs is not None:
            for field in differing or ():
                batch.append(
                    Discrepancy(
                        **common,
                        employee_code=ours.employee_code,
                        kind=DiscrepancyKind.FIELD_MISMATCH,
                        field=field,
                        severity=FIELD_SEVERITY[field],
                        keel_value=_json(getattr(ours, field)),
                        insurer_value=_json(getattr(theirs, field)),
                        key=f"field:{ours.employee_code}:{field}",
                    )
                )
                counts[DiscrepancyKind.FIELD_MISMATCH] += 1
            if not differing:
                counts["matched"] += 1
                matched_in_batch += 1
        if len(batch) >= BATCH or matched_in_batch >= BATCH:
            _flush(batch, counts, first_pass=first_pass)
            ReconciliationRun.objects.filter(pk=run.pk).update(rows_matched=F("rows_matched") + matched_in_batch)
            matched_in_batch = 0
            heartbeat()
    _flush(batch, counts, first_pass=first_pass)
    ReconciliationRun.objects.filter(pk=run.pk).update(rows_matched=F("rows_matched") + matched_in_batch)
    return counts


def _merge_by_id(
    ours: Iterator[tuple[int, int, datetime]], theirs: Iterator[tuple[int, int]]
) -> Iterator[tuple[int, int | None, int | None, datetime | None]]:
    """Merge-join Keel's `(endorsement_id, amount, latest posting)` and the insurer's `(endorsement_id, amount)`
    streams, both ordered by id: `(id, keel_amount, insurer_amount, keel's latest posting)`."""
    k, i = next(ours, None), next(theirs, None)
    while k is not None or i is not None:
        if i is None or (k is not None and k[0] < i[0]):
            assert k is not None
            yield k[0], k[1], None, k[2]
            k = next(ours, None)
        elif k is None or i[0] < k[0]:
            yield i[0], None, i[1], None
            i = next(theirs, None)
        else:
            yield k[0], k[1], i[1], k[2]
            k, i = next(ours, None), next(theirs, None)


def _with_employee_codes(batch: list[Discrepancy], *, policy_id: int) -> list[Discrepancy]:
    """Fill in each money discrepancy's `employee_code` from the Keel endorsement it concerns (one query per
    batch), so an operator sees whose charge it is; a charge for an endorsement Keel does not have on this
    policy keeps "" (Keel does not know the member)."""
    codes = endorsement_employee_codes(policy_id=policy_id, endorsement_ids=[d.endorsement_id for d in batch])
    for discrepancy in batch:
        discrepancy.employee_code = codes.get(discrepancy.endorsement_id or 0, "")
    return batch


def policy_money_match(
    *,
    run: ReconciliationRun,
    scope: PolicyScope,
    statement: Iterator[tuple[int, int]],
    heartbeat: Callable[[], None] = lambda: None,
    as_of: datetime | None = None,
) -> Counter[str]:
    """Compare the insurer's statement of charges (`(endorsement_id, amount)`, paise, debit > 0, credit < 0,
    in id order) with Keel's captures minus refunds per endorsement of the policy, and write a `Discrepancy`
    per difference (key `charge:<endorsement id>`, once per run):

    - Keel moved money for an endorsement the insurer never charged → `charge_missing`;
    - both hold it with different amounts, or the insurer charged what Keel never captured → `amount_mismatch`
      (a missing Keel side counts as 0).
    `as_of`: when the statement was asked for (default: now, before the first charge is read). An endorsement
    whose latest Keel capture or refund is after `as_of` and whose amounts differ is not written: it counts as
    `changed_during_run` (ADR 0063; the statement may predate that posting).
    Each carries the member's `employee_code` from its endorsement where Keel has it. Returns counts by kind.
    Endorsements with no money on either side are not compared. `heartbeat` is called every `BATCH` charges
    compared (the runner's keeps the run's lock alive while a long statement streams).
    """
    as_of = as_of or timezone.now()
    counts: Counter[str] = Counter()
    batch: list[Discrepancy] = []
    first_pass = _first_pass(run, scope, MONEY_KINDS)
    for walked, (endorsement_id, keel, insurer, posted_at) in enumerate(
        _merge_by_id(keel_charges(policy_id=scope.policy_id), statement), start=1
    ):
        if walked % BATCH == 0:
            heartbeat()
        if keel == insurer:
            continue
        if insurer is None and not keel:
            continue
        if posted_at is not None and posted_at > as_of:
            counts[CHANGED_DURING_RUN] += 1  # money posted after the statement was read: not judged by this run
            continue
        kind = DiscrepancyKind.CHARGE_MISSING if insurer is None else DiscrepancyKind.AMOUNT_MISMATCH
        batch.append(
            Discrepancy(
                run=run,
                employer_id=scope.employer_id,
                policy_id=scope.policy_id,
                endorsement_id=endorsement_id,
                kind=kind,
                severity=DiscrepancySeverity.HIGH,
                keel_value=keel or 0,
                insurer_value=insurer,
                key=f"charge:{endorsement_id}",
            )
        )
        counts[kind] += 1
        if len(batch) >= BATCH:
            _flush(_with_employee_codes(batch, policy_id=scope.policy_id), counts, first_pass=first_pass)
    _flush(_with_employee_codes(batch, policy_id=scope.policy_id), counts, first_pass=first_pass)
    return counts
