"""Every reconciliation write (issue 12, ADR 0040): runs, their locks, the insurer-side roster and its history.

Keyword-only, typed, one transaction per state change. No I/O to the insurer happens here: `runner.py` pulls
pages outside any transaction and hands each page to `roster_page_record`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

import structlog
from django.db import connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from apps.audit.services import audit_record
from apps.common.actors import Actor
from apps.common.bulk import copy_create
from apps.common.errors import Conflict, DomainValidationError
from apps.endorsements import services as endorsement_services
from apps.endorsements.parsing import CORRECTABLE_FIELDS, ParseErrors, draft_from_request
from apps.outbox.services import outbox_enqueue
from apps.partners.webhooks.contracts import EventDraft, EventObjectType, EventType
from apps.partners.webhooks.events import partner_events_record
from apps.reconciliation.contracts import (
    ACTIONS_OF_KIND,
    AUDIT_DISCREPANCY_RESOLVED,
    AUDIT_RUN_CANCEL_REQUESTED,
    AUDIT_RUN_CANCELLED,
    AUDIT_RUN_RESUMED,
    AUDIT_RUN_STARTED,
    DEAD_WORKER_SECONDS,
    LOCK_TTL_SECONDS,
    MAX_RESUMES,
    TOPIC_RESEND,
    TOPIC_RUN_REQUESTED,
    ResolutionAction,
    ResolutionNotAllowedError,
    RunLockLostError,
    RunOverlapError,
    run_summary,
)
from apps.reconciliation.models import (
    Discrepancy,
    DiscrepancyKind,
    DiscrepancyStatus,
    InsurerRosterChange,
    InsurerRosterEntry,
    ReconciliationLock,
    ReconciliationRun,
    RunStatus,
)
from apps.reconciliation.selectors import keel_member_for_resend

log = structlog.get_logger(__name__)

ROSTER_FIELDS = ("first_name", "last_name", "date_of_birth", "sum_insured", "start_date", "gender")


def _lock_rows(*, run: ReconciliationRun, insurer_id: int, employer_ids: Sequence[int]) -> None:
    """Take the `(insurer, employer)` locks of `run`, all or none (inside the caller's transaction).

    1. Insert one lock row per employer, in employer-id order (two runs never wait on each other in a cycle).
    2. On conflict, take the row over only if its lock has expired (its worker died): `DO UPDATE … WHERE
       expires_at < now` (the application's clock, which wrote the expiry); a live lock is left
       alone and its row is not returned.
    3. If fewer rows came back than asked for, a live run holds one: raise `RunOverlapError` naming it, and
       the caller's transaction rolls back every lock taken in step 1.
    """
    now = timezone.now()
    expires_at = now + timedelta(seconds=LOCK_TTL_SECONDS)
    ids = sorted(set(employer_ids))
    if not ids:
        return
    table = ReconciliationLock._meta.db_table
    # One VALUES row per employer, in id order: the same statement on PostgreSQL and on SQLite (≥ 3.35, the
    # embedded `make run` default), which has no arrays to unnest.
    rows = ", ".join(["(%s, %s, %s, %s, %s)"] * len(ids))
    params: list[Any] = [
        value for employer_id in ids for value in (insurer_id, employer_id, run.pk, run.resumes, expires_at)
    ]
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {table} (insurer_id, employer_id, run_id, attempt, expires_at)
            VALUES {rows}
            ON CONFLICT (insurer_id, employer_id) DO UPDATE
               SET run_id = EXCLUDED.run_id, attempt = EXCLUDED.attempt, expires_at = EXCLUDED.expires_at
             WHERE {table}.expires_at < %s
            RETURNING employer_id
            """,  # noqa: S608 — the table name is ours, every value is a parameter
            [*params, now],
        )
        taken = {row[0] for row in cursor.fetchall()}
    if len(taken) < len(ids):
        holder = (
            ReconciliationLock.objects.filter(insurer_id=insurer_id, employer_id__in=set(ids) - taken)
            .order_by("employer_id")
            .values_list("run_id", flat=True)
            .first()
        )
        raise RunOverlapError(running_run_id=holder or 0)


@transaction.atomic
def reconciliation_start(
    *,
    insurer_id: int,
    employer_ids: Sequence[int],
    employer_id: int | None,
    policy_id: int | None,
    partner_id: int | None,
    actor: Actor,
    queue: bool = True,
) -> ReconciliationRun:
    """Create a RUNNING run for `insurer_id` over `employer_ids` (the employers it covers; `employer_id` is the
    one the caller named, None for an all-employers operator run) and take their locks. With `queue` (the API,
    beat, `reconcile` without `--wait`), an outbox row `TOPIC_RUN_REQUESTED` in the same transaction has a worker
    run it: a broker outage delays the run, it never loses it (the relay retries). `queue=False` is for a caller
    that executes the run itself (`reconcile --wait`).

    Raises `RunOverlapError` (nothing written) when a live run holds the lock of any of those employers, and
    `ValueError` when `employer_ids` is empty (nothing to reconcile).
    Runs whose lock was taken over (their worker died) are ended FAILED.
    """
    if not employer_ids:
        raise ValueError("a run covers at least one employer")
    now = timezone.now()
    run = ReconciliationRun.objects.create(
        insurer_id=insurer_id,
        employer_id=employer_id,
        policy_id=policy_id,
        partner_id=partner_id,
        employer_ids=sorted(set(employer_ids)),
        requested_by=actor.display[:120],
        started_at=now,
    )
    previous_holders = set(
        ReconciliationLock.objects.filter(insurer_id=insurer_id, employer_id__in=employer_ids).values_list(
            "run_id", flat=True
        )
    )
    _lock_rows(run=run, insurer_id=insurer_id, employer_ids=employer_ids)
    stale = previous_holders - set(
        ReconciliationLock.objects.filter(run_id__in=previous_holders).values_list("run_id", flat=True)
    )
    if stale:
        ReconciliationRun.objects.filter(pk__in=stale, status=RunStatus.RUNNING).update(
            status=RunStatus.FAILED, finished_at=now, error="lock expired: its worker stopped"
        )
    audit_record(
        actor=actor,
        action=AUDIT_RUN_STARTED,
        object_type="reconciliation_run",
        object_id=run.pk,
        employer_id=employer_id,
        after={"insurer_id": insurer_id, "employer_id": employer_id, "policy_id": policy_id},
    )
    if queue:
        outbox_enqueue(
            topic=TOPIC_RUN_REQUESTED, payload={"run_id": run.pk, "attempt": 0}, key=f"reconciliation-run-{run.pk}"
        )
    return run


def reconciliation_lock_refresh(*, run_id: int, attempt: int | None = None) -> None:
    """Push the run's lock expiry `LOCK_TTL_SECONDS` forward (the worker's heartbeat). `attempt`: the run's
    `resumes` the calling worker executes (None: any). Raises `RunLockLostError` if the run holds no lock of that
    attempt — it expired and another run took it over, or the abandoned-run sweep resumed the run for a new
    worker (ADR 0061) — so a slow worker stops instead of racing the run's new owner."""
    held = ReconciliationLock.objects.filter(run_id=run_id)
    if attempt is not None:
        held = held.filter(attempt=attempt)
    if not held.update(expires_at=timezone.now() + timedelta(seconds=LOCK_TTL_SECONDS)):
        raise RunLockLostError(f"run {run_id} lost its lock" + ("" if attempt is None else f" (attempt {attempt})"))


def _entry_values(member: Mapping[str, Any]) -> dict[str, Any]:
    # `gender` is optional: most insurers do not send it.
    return {field: member.get(field, "") if field == "gender" else member[field] for field in ROSTER_FIELDS}


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, date) else v for k, v in values.items()}


def _entries_locked(*, insurer_id: int, policy_id: int, codes: Sequence[str]) -> dict[str, InsurerRosterEntry]:
    """The current entries of `codes` (sorted: a fixed lock order) on one policy, locked FOR UPDATE, by code.

    One index probe per code, whatever the table holds (ADR 0051). The plain `employee_code IN (…)` filter let
    PostgreSQL, whose statistics of a table filled within the run say one row per policy, scan the whole
    policy's entries and test each against the 1,000 codes: 0.07 s for the first page, 0.8 s for the 30th,
    quadratic in the roster. A `LATERAL (… LIMIT 1)` per code is never flattened into a hash join, so each code
    is one probe of the unique index `(insurer, policy, employee_code)`. SQLite (`make run`) keeps the ORM.
    """
    if connection.vendor != "postgresql":
        return {
            e.employee_code: e
            for e in InsurerRosterEntry.objects.select_for_update().filter(
                insurer_id=insurer_id, policy_id=policy_id, employee_code__in=list(codes)
            )
        }
    table = connection.ops.quote_name(InsurerRosterEntry._meta.db_table)
    sql = f"""
        SELECT e.* FROM unnest(%s::varchar[]) WITH ORDINALITY AS c(code, n)
        CROSS JOIN LATERAL (
            SELECT * FROM {table} r
             WHERE r.insurer_id = %s AND r.policy_id = %s AND r.employee_code = c.code
             LIMIT 1 FOR UPDATE
        ) e
        ORDER BY c.n
    """  # noqa: S608 — the table name is ours, every value is a parameter
    return {e.employee_code: e for e in InsurerRosterEntry.objects.raw(sql, [list(codes), insurer_id, policy_id])}


# long: one transaction per page (lock, upsert, COPY, run progress) under a numbered-step docstring; the
# steps share the locked rows.
@transaction.atomic
def roster_page_record(
    *,
    run_id: int,
    insurer_id: int,
    policy_id: int,
    members: Sequence[Mapping[str, Any]],
    next_cursor: str | None,
    rows_expected: int = 0,
    attempt: int | None = None,
) -> int:
    """Upsert one pulled page into the current insurer roster and advance the run, in one transaction.

    `members`: dicts with `employee_code`, `first_name`, `last_name`, `date_of_birth` and `start_date`
    (`date`), `sum_insured` (paise). Steps:
    1. refresh the run's lock of `attempt` (the worker's `resumes`; raises `RunLockLostError` if lost: nothing of
       the page is written);
    2. read the entries of the page's codes, locked, one index probe per code (`_entries_locked`); create new
       ones (COPY), update changed ones and write one `InsurerRosterChange` per changed entry (changed fields
       only, previous and new);
    3. mark every entry seen by this run; `rows_pulled` grows only by entries this run had not seen yet, so a
       page pulled twice (a retry, a resumed run) is never counted twice;
    4. store `next_cursor` as the policy's resume point (None: the policy is done), and add `rows_expected`
       (the policy's expected members, given with its first page) to the run's.
    Returns the number of entries newly seen by this run.
    """
    reconciliation_lock_refresh(run_id=run_id, attempt=attempt)
    now = timezone.now()
    by_code = {m["employee_code"]: m for m in members}
    existing = _entries_locked(insurer_id=insurer_id, policy_id=policy_id, codes=sorted(by_code))
    created: list[InsurerRosterEntry] = []
    changed: list[InsurerRosterEntry] = []
    unchanged_ids: list[int] = []
    history: list[InsurerRosterChange] = []
    newly_seen = 0
    for code, member in by_code.items():
        values = _entry_values(member)
        entry = existing.get(code)
        if entry is None:
            created.append(
                InsurerRosterEntry(
                    insurer_id=insurer_id,
                    policy_id=policy_id,
                    employee_code=code,
                    last_seen_run_id=run_id,
                    first_seen_at=now,
                    updated_at=now,
                    **values,
                )
            )
            newly_seen += 1
            continue
        if entry.last_seen_run_id != run_id:
            newly_seen += 1
        diff = {f: v for f, v in values.items() if getattr(entry, f) != v}
        if not diff:
            unchanged_ids.append(entry.pk)
            continue
        previous = {f: getattr(entry, f) for f in diff}
        for field, value in diff.items():
            setattr(entry, field, value)
        entry.updated_at = now
        entry.last_seen_run_id = run_id
        changed.append(entry)
        history.append(
            InsurerRosterChange(
                entry=entry, run_id=run_id, previous=_jsonable(previous), new=_jsonable(diff), changed_at=now
            )
        )
    copy_create(created)  # COPY on PostgreSQL (ids from the sequence first), `bulk_create` elsewhere
    # Most entries are unchanged: one plain UPDATE marks them seen (a `bulk_update` of 1,000 rows builds a
    # CASE per field per row, and cost seconds a page in the benchmark).
    if unchanged_ids:
        InsurerRosterEntry.objects.filter(pk__in=unchanged_ids).update(last_seen_run_id=run_id)
    if changed:
        InsurerRosterEntry.objects.bulk_update(
            changed, [*ROSTER_FIELDS, "last_seen_run", "updated_at"], batch_size=1000
        )
    InsurerRosterChange.objects.bulk_create(history, batch_size=1000)
    run = ReconciliationRun.objects.select_for_update().get(pk=run_id)
    cursors = dict(run.resume_cursors)
    # A finished policy keeps the key with None, so a resumed run skips it.
    cursors[str(policy_id)] = next_cursor or None
    ReconciliationRun.objects.filter(pk=run_id).update(
        pages_pulled=F("pages_pulled") + 1,
        rows_pulled=F("rows_pulled") + newly_seen,
        policies_done=F("policies_done") + (0 if next_cursor else 1),
        rows_expected=F("rows_expected") + rows_expected,
        resume_cursors=cursors,
    )
    return newly_seen


@transaction.atomic
def insurer_read_note(*, run_id: int, policy_id: int, at: datetime) -> datetime:
    """Note that the run's worker is about to ask the insurer for policy `policy_id`'s data at `at` (an aware
    time), keeping the earliest such time over every attempt of the run in `insurer_read_at` (ADR 0063): the
    match judges Keel as it was then, so nothing Keel wrote after the insurer could have seen it is judged.
    Written under the run's row lock before the first page is asked for (a file insurer's answer to an earlier
    attempt's request is older than this attempt). Returns the time kept for the policy."""
    run = ReconciliationRun.objects.select_for_update().only("insurer_read_at").get(pk=run_id)
    read = dict(run.insurer_read_at or {})
    earlier = read.get(str(policy_id))
    if earlier is not None and datetime.fromisoformat(earlier) <= at:
        return datetime.fromisoformat(earlier)
    read[str(policy_id)] = at.isoformat()
    ReconciliationRun.objects.filter(pk=run_id).update(insurer_read_at=read)
    return at


def reconciliation_finish(
    *,
    run_id: int,
    status: str,
    summary: Mapping[str, Any] | None = None,
    error: str = "",
    employer_counts: Mapping[int, Mapping[str, int]] | None = None,
    attempt: int | None = None,
) -> bool:
    """End a RUNNING run with `status` (COMPLETED, FAILED, CANCELLED), release its locks and, in the same
    transaction, record one `reconciliation.completed` partner event per employer the run covered, carrying
    only that employer's figures (`employer_counts`: counts by kind plus `matched`, per employer id; an employer
    without counts reports zeros) in the shape of the API's run summary (`run_summary`). `attempt`: the run's
    `resumes` the calling worker executed (None: any); a worker of an earlier attempt (the sweep resumed the run
    since, ADR 0061) ends nothing. Returns False, writing nothing, if the run had already ended or moved to
    another attempt (another worker, a takeover or the sweep got there first)."""
    with transaction.atomic():
        now = timezone.now()
        values: dict[str, Any] = {"status": status, "finished_at": now, "error": error[:2000]}
        if summary is not None:
            values["summary"] = dict(summary)
        current = ReconciliationRun.objects.filter(pk=run_id, status=RunStatus.RUNNING)
        if attempt is not None:
            current = current.filter(resumes=attempt)
        if current.update(**values) != 1:
            # An ended run's leftover rows go; a resumed run's rows belong to its new attempt and stay.
            ReconciliationLock.objects.filter(run_id=run_id).exclude(run__status=RunStatus.RUNNING).delete()
            return False
        ReconciliationLock.objects.filter(run_id=run_id).delete()
        run = ReconciliationRun.objects.select_related("insurer").get(pk=run_id)
        partner_events_record(
            [
                EventDraft(
                    type=EventType.RECONCILIATION_COMPLETED,
                    partner_id=None,
                    employer_id=employer_id,
                    object_type=EventObjectType.RECONCILIATION,
                    object_id=str(run.pk),
                    data={
                        "id": run.pk,
                        "insurer": run.insurer.code,
                        "employer": employer_id,
                        "status": status,
                        "summary": run_summary((employer_counts or {}).get(employer_id, {})),
                        "started_at": run.started_at.isoformat() if run.started_at else None,
                        "finished_at": now.isoformat(),
                    },
                )
                for employer_id in run.employer_ids
            ]
        )
    return True


# long: the two outcomes of a cancel (flag for a live worker, or end at once when none is left) under the locks
# they share, in one transaction with their audit rows.
@transaction.atomic
def reconciliation_cancel(*, run: ReconciliationRun, actor: Actor) -> ReconciliationRun:
    """Cancel a RUNNING run (ADR 0063). A run that already ended is returned unchanged (cancelling is idempotent).

    1. Lock the run's own lock rows (employer-id order, as a worker's page takes them), then the run row; a run
       no longer RUNNING is returned as it is.
    2. Flag it (`cancel_requested_at`, the first time only, audited `reconciliation.run_cancel_requested`).
    3. A live worker (its lock refreshed in the last `DEAD_WORKER_SECONDS`) ends the run CANCELLED itself at its
       next page or within a second of a wait, keeping what it pulled.
    4. No live worker (the last refresh is older, or the run holds no lock: its worker was killed, or none ever
       picked it up): end it CANCELLED now through `reconciliation_finish` (a conditional update on RUNNING; its
       locks released and one `reconciliation.completed` event per employer written), audited
       `reconciliation.run_cancelled` with the last heartbeat, all in this transaction. The sweep never resumes
       it, and a worker that wakes up finds no lock of its own and stops without writing.
    Returns the run as it is after the call."""
    now = timezone.now()
    locks = list(ReconciliationLock.objects.select_for_update().filter(run_id=run.pk).order_by("employer_id"))
    current = ReconciliationRun.objects.select_for_update().filter(pk=run.pk, status=RunStatus.RUNNING).first()
    if current is None:
        run.refresh_from_db()
        return run
    if current.cancel_requested_at is None:
        ReconciliationRun.objects.filter(pk=run.pk).update(cancel_requested_at=now)
        audit_record(
            actor=actor,
            action=AUDIT_RUN_CANCEL_REQUESTED,
            object_type="reconciliation_run",
            object_id=run.pk,
            employer_id=run.employer_id,
        )
    last_heartbeat = max((lock.expires_at for lock in locks), default=None)
    if last_heartbeat is not None:
        last_heartbeat -= timedelta(seconds=LOCK_TTL_SECONDS)
    if last_heartbeat is not None and now - last_heartbeat <= timedelta(seconds=DEAD_WORKER_SECONDS):
        run.refresh_from_db()
        return run
    progress = {
        "pages_pulled": current.pages_pulled,
        "rows_pulled": current.rows_pulled,
        "rows_matched": current.rows_matched,
    }
    if reconciliation_finish(run_id=run.pk, status=RunStatus.CANCELLED, summary=progress):
        audit_record(
            actor=actor,
            action=AUDIT_RUN_CANCELLED,
            object_type="reconciliation_run",
            object_id=run.pk,
            employer_id=run.employer_id,
            before={"status": RunStatus.RUNNING},
            after={
                "status": RunStatus.CANCELLED,
                "last_heartbeat": last_heartbeat.isoformat() if last_heartbeat else None,
                "resumes": current.resumes,
            },
        )
    run.refresh_from_db()
    return run


def _rupees(paise: int) -> str:
    return f"{paise // 100}.{paise % 100:02d}"


def _refuse_stale_insurer_action(discrepancy: Discrepancy, action: str) -> None:
    """Refuse (`DomainValidationError` naming `action`) an insurer-side action the facts no longer support —
    Keel's cover is read now, under the discrepancy's lock, not as the run saw it (newcomer trial):

    - `resend` of a member Keel no longer covers: nothing to resend;
    - `resend` of a field a correction cannot carry (a start date: `CORRECTABLE_FIELDS`): the insurer would
      answer "confirmed" and change nothing — it is settled with the insurer outside Keel, then ignored;
    - `request_insurer_deletion` of a member Keel covers now (added since the run): deleting it at the insurer
      would leave the employer paying for cover the insurer no longer holds."""
    covered = keel_member_for_resend(policy_id=discrepancy.policy_id, employee_code=discrepancy.employee_code)
    if action == ResolutionAction.RESEND:
        if not covered:
            raise DomainValidationError({"action": "Keel no longer covers this member: nothing to resend."})
        if discrepancy.kind == DiscrepancyKind.FIELD_MISMATCH and discrepancy.field not in CORRECTABLE_FIELDS:
            raise DomainValidationError(
                {
                    "action": f"A `{discrepancy.field}` difference cannot be resent as a correction; settle it with "
                    "the insurer and `ignore` it with a note."
                }
            )
    elif covered:
        raise DomainValidationError(
            {"action": "Keel covers this member now (added since the run): asking the insurer to delete it is refused."}
        )


def _intake_body(discrepancy: Discrepancy, action: str, gender: str) -> dict[str, Any]:
    """The intake request (SPEC §7 shape) that resolves `discrepancy` with `action`."""
    today = timezone.localdate().isoformat()
    if action == ResolutionAction.CREATE_DELETION:
        return {"type": "deletion", "employee_code": discrepancy.employee_code, "effective_date": today}
    if action == ResolutionAction.CREATE_CORRECTION:
        value = discrepancy.insurer_value
        if discrepancy.field not in CORRECTABLE_FIELDS:
            raise ResolutionNotAllowedError(f"`{discrepancy.field}` cannot be corrected through an endorsement")
        change = _rupees(int(value or 0)) if discrepancy.field == "sum_insured" else value
        return {
            "type": "correction",
            "employee_code": discrepancy.employee_code,
            "effective_date": today,
            "changes": {discrepancy.field: change},
        }
    member = dict(discrepancy.insurer_value or {})
    gender = gender or str(member.get("gender") or "")
    if not gender:
        raise DomainValidationError(
            {"gender": "The insurer's record has no gender: send `gender` (male, female, other)."}
        )
    return {
        "type": "addition",
        "effective_date": member.get("start_date") or today,
        "sum_insured": _rupees(int(member["sum_insured"])),
        "employee": {
            "employee_code": discrepancy.employee_code,
            "first_name": member.get("first_name") or "",
            "last_name": member.get("last_name") or "",
            "date_of_birth": member.get("date_of_birth"),
            "gender": gender,
        },
    }


def _intake(discrepancy: Discrepancy, action: str, gender: str, actor: Actor) -> dict[str, Any]:
    """Submit the resolving endorsement through the public intake (validation, pricing, holds follow in the
    pipeline); its refusals surface as they do on `POST /endorsements` (422, 409 duplicate)."""
    try:
        draft = draft_from_request(_intake_body(discrepancy, action, gender))
    except ParseErrors as exc:
        grouped: dict[str, list[str]] = {}
        for field, message in exc.errors:
            grouped.setdefault(field, []).append(message)
        raise DomainValidationError(grouped) from exc
    endorsement = endorsement_services.endorsement_submit(
        employer=discrepancy.employer,
        policy=discrepancy.policy,
        draft=draft,
        partner_id=discrepancy.employer.partner_id,
        actor=actor,
    )
    return {"endorsement_id": endorsement.pk}


def resend_idempotency_key(discrepancy_id: int) -> str:
    """The insurer applies a resend (or a requested deletion) once, however often it is delivered."""
    return f"reconciliation-resend-{discrepancy_id}"


# long: a docstring listing every action and its effect (ADR 0040, 0057); the body dispatches on the action
# under the row lock in one transaction.
@transaction.atomic
def discrepancy_resolve(*, discrepancy_id: int, action: str, note: str, actor: Actor, gender: str = "") -> Discrepancy:
    """Resolve an open discrepancy once, audited in the same transaction (ADR 0040).

    1. Lock the row; if it is no longer open: the same action again is a no-op returning the first resolution
       (a retry); any other action is a `Conflict` (409 `discrepancy-already-resolved`, naming the action it
       was resolved with) — a client that asked for something else must not read success.
    2. `ignore` (any kind, with a non-blank `note`, else `DomainValidationError` naming `note`) → IGNORED.
       `flag_for_finance` (money kinds) → RESOLVED with an operator task in `resolution_result`, no
       ledger change. `create_deletion` (missing_at_insurer: end Keel's cover),
       `create_addition` (missing_internally: from the insurer's record; `gender` from the body, else the
       insurer's record, else `DomainValidationError` naming `gender`) and `create_correction`
       (field_mismatch: Keel takes the insurer's value) → RESOLVED with the new
       endorsement's id, submitted through the endorsements intake in this transaction. `resend`
       (missing_at_insurer, field_mismatch) → RESOLVED; an outbox message has the consumer send Keel's member
       to the insurer again (an addition, or a correction), with no Keel coverage change and **no money**
       (ADR 0057): Keel already charged the employer for the cover it holds, so bringing the insurer in line
       with it owes nothing either way; what the insurer charged its CD account for its wrong record is the
       statement money match's to find (`amount_mismatch` / `charge_missing`). A member Keel no longer covers
       has nothing to resend: `DomainValidationError` naming `action`.
       `request_insurer_deletion` (missing_internally) → RESOLVED; the same consumer sends the insurer a
       deletion of its member, touching no Keel cover.
    Raises `ResolutionNotAllowedError` for an action the kind does not take, the intake's own
    `DomainValidationError` / `Conflict`, and the resend's `DomainValidationError`; nothing is written then.
    """
    discrepancy = (
        Discrepancy.objects.select_for_update(of=("self",)).select_related("employer", "policy").get(pk=discrepancy_id)
    )
    if discrepancy.status != DiscrepancyStatus.OPEN:
        if discrepancy.resolution_action == action:
            return discrepancy
        raise Conflict(
            f"This discrepancy is already {discrepancy.status}"
            + (f" by `{discrepancy.resolution_action}`" if discrepancy.resolution_action else " by a later run")
            + f"; `{action[:40]}` was not applied.",
            slug="discrepancy-already-resolved",
            extra={"discrepancy_status": discrepancy.status, "resolution_action": discrepancy.resolution_action},
        )
    note = note.strip()
    if action == ResolutionAction.IGNORE and not note:
        # Issue 12: an ignored difference says why, so the next reader knows it was a decision.
        raise DomainValidationError({"note": "`ignore` needs a note saying why."})
    result: dict[str, Any]
    if action == ResolutionAction.IGNORE:
        status, result = DiscrepancyStatus.IGNORED, {"ignored": True}
    elif action not in ACTIONS_OF_KIND.get(discrepancy.kind, frozenset()):
        raise ResolutionNotAllowedError(f"`{action}` does not apply to a {discrepancy.kind} discrepancy")
    elif action == ResolutionAction.FLAG_FOR_FINANCE:
        status, result = DiscrepancyStatus.RESOLVED, {"finance_task": f"reconciliation-discrepancy-{discrepancy.pk}"}
    elif action in (ResolutionAction.RESEND, ResolutionAction.REQUEST_INSURER_DELETION):
        _refuse_stale_insurer_action(discrepancy, action)
        key = resend_idempotency_key(discrepancy.pk)
        outbox_enqueue(topic=TOPIC_RESEND, payload={"discrepancy_id": discrepancy.pk}, key=key)
        status, result = DiscrepancyStatus.RESOLVED, {"resend_key": key}
    else:
        status, result = DiscrepancyStatus.RESOLVED, _intake(discrepancy, action, gender, actor)
    discrepancy.status = status
    discrepancy.resolution_action = action
    discrepancy.resolution_note = note
    discrepancy.resolution_result = result
    discrepancy.resolved_by = actor.display[:120]
    discrepancy.resolved_at = timezone.now()
    discrepancy.save(
        update_fields=[
            "status",
            "resolution_action",
            "resolution_note",
            "resolution_result",
            "resolved_by",
            "resolved_at",
        ]
    )
    audit_record(
        actor=actor,
        action=AUDIT_DISCREPANCY_RESOLVED,
        object_type="reconciliation_discrepancy",
        object_id=discrepancy.pk,
        employer_id=discrepancy.employer_id,
        before={"status": DiscrepancyStatus.OPEN},
        after={"status": status, "resolution_action": action, "resolution_note": note, **result},
    )
    return discrepancy


def reconciliation_abandoned_sweep() -> dict[str, list[int]]:
    """Resume every RUNNING run whose worker stopped (ADR 0061; beat, every minute): nothing is lost when a
    worker goes away (SPEC §1). A run's worker stopped when the run holds no live lock (no refresh for
    `LOCK_TTL_SECONDS`) and it was started or last resumed more than `LOCK_TTL_SECONDS` ago.

    1. Pick the candidates (one query), then handle each in its own transaction (`_abandoned_run_handle`):
       resumed, ended, or left alone when its worker refreshed in between.
    Returns `{"resumed": [ids], "failed": [ids], "cancelled": [ids]}`."""
    now = timezone.now()
    cutoff = now - timedelta(seconds=LOCK_TTL_SECONDS)
    live = ReconciliationLock.objects.filter(expires_at__gte=now).values("run_id")
    candidates = list(
        ReconciliationRun.objects.filter(status=RunStatus.RUNNING)
        .filter(Q(resumed_at__lt=cutoff) | Q(resumed_at__isnull=True, started_at__lt=cutoff))
        .exclude(pk__in=live)
        .order_by("pk")
        .values_list("pk", flat=True)
    )
    outcome: dict[str, list[int]] = {"resumed": [], "failed": [], "cancelled": []}
    for run_id in candidates:
        handled = _abandoned_run_handle(run_id=run_id)
        if handled:
            outcome[handled].append(run_id)
    return outcome


# long: the numbered decision of the sweep (ADR 0061) under the run's row lock, each branch a few lines.
@transaction.atomic
def _abandoned_run_handle(*, run_id: int) -> str:
    """Resume or end one run whose worker stopped, in one transaction; returns "resumed", "failed", "cancelled"
    or "" (left alone).

    1. Lock the run row, then its scope's lock rows (employer-id order, the order runs take them). A run that
       ended meanwhile, or still holds a live lock of its own (its worker refreshed after the candidate query),
       is left alone.
    2. A cancel was asked for → end it CANCELLED now (resuming it would only stop at its first page).
    3. Another run took any of its `(insurer, employer)` locks meanwhile (a row now names another run, or is
       gone because that run ended and released it) → end it FAILED: that run may have pulled the same policies
       since, and entries it saw are no longer this run's to match (`last_seen_run`), so resuming could report
       members missing that are not.
    4. Resumed `MAX_RESUMES` times already → end it FAILED, saying so.
    5. Otherwise resume it: take its own expired lock rows again for attempt `resumes + 1` (a conditional update;
       a worker of the earlier attempt that wakes up finds no row of its attempt and stops), count the resume,
       audit it and queue the run again through the outbox (`TOPIC_RUN_REQUESTED`, payload `{run_id, attempt}`,
       a key per resume). The new worker continues from the run's resume cursors: pages recorded before are
       not pulled or counted again, and the match is rebuilt whole (discrepancies once per run and key).
    Ending goes through `reconciliation_finish` (its locks released, its partner events recorded).
    """
    # The lock rows first, then the run: the order a worker recording a page takes them (`roster_page_record`), so the
    # sweep and a live worker never wait on each other in a cycle. A run's scope never changes.
    scope = ReconciliationRun.objects.filter(pk=run_id, status=RunStatus.RUNNING).only("insurer", "employer_ids")
    candidate = scope.first()
    if candidate is None:
        return ""
    locks = list(
        ReconciliationLock.objects.select_for_update()
        .filter(insurer_id=candidate.insurer_id, employer_id__in=candidate.employer_ids)
        .order_by("employer_id")
    )
    run = ReconciliationRun.objects.select_for_update().filter(pk=run_id, status=RunStatus.RUNNING).first()
    if run is None:
        return ""
    now = timezone.now()
    own = [lock for lock in locks if lock.run_id == run.pk]
    if any(lock.expires_at >= now for lock in own):
        return ""
    abandoned = f"abandoned: no heartbeat for {LOCK_TTL_SECONDS} s (its worker stopped)"
    if run.cancel_requested_at is not None:
        reconciliation_finish(run_id=run.pk, status=RunStatus.CANCELLED, error="")
        return "cancelled"
    if len(own) < len(set(run.employer_ids)):
        other = next((lock.run_id for lock in locks if lock.run_id != run.pk), None)
        by = f"run {other}" if other else "another run"
        reconciliation_finish(
            run_id=run.pk, status=RunStatus.FAILED, error=f"{abandoned}; not resumed: {by} took over its scope"
        )
        return "failed"
    if run.resumes >= MAX_RESUMES:
        reconciliation_finish(
            run_id=run.pk,
            status=RunStatus.FAILED,
            error=f"{abandoned}; not resumed again: it was resumed {run.resumes} times, the most allowed",
        )
        return "failed"
    attempt = run.resumes + 1
    ReconciliationLock.objects.filter(run_id=run.pk, expires_at__lt=now).update(
        attempt=attempt, expires_at=now + timedelta(seconds=LOCK_TTL_SECONDS)
    )
    ReconciliationRun.objects.filter(pk=run.pk).update(resumes=attempt, resumed_at=now)
    audit_record(
        actor=Actor.system("reconciliation.sweep_abandoned"),
        action=AUDIT_RUN_RESUMED,
        object_type="reconciliation_run",
        object_id=run.pk,
        employer_id=run.employer_id,
        before={"resumes": run.resumes},
        after={"resumes": attempt, "pages_pulled": run.pages_pulled, "rows_pulled": run.rows_pulled},
    )
    outbox_enqueue(
        topic=TOPIC_RUN_REQUESTED,
        payload={"run_id": run.pk, "attempt": attempt},
        key=f"reconciliation-run-{run.pk}-resume-{attempt}",
    )
    log.warning("reconciliation.run_resumed", run_id=run.pk, attempt=attempt, pages_pulled=run.pages_pulled)
    return "resumed"


ROSTER_HISTORY_DAYS = 400


def roster_history_purge(*, batch: int = 5000) -> int:
    """Delete roster changes older than `ROSTER_HISTORY_DAYS` (issue 12: kept 400 days), `batch` rows per
    statement so a large backlog never holds one long lock. Returns the number deleted."""
    cutoff = timezone.now() - timedelta(days=ROSTER_HISTORY_DAYS)
    total = 0
    while True:
        ids = list(InsurerRosterChange.objects.filter(changed_at__lt=cutoff).values_list("pk", flat=True)[:batch])
        if not ids:
            return total
        deleted, _ = InsurerRosterChange.objects.filter(pk__in=ids).delete()
        total += deleted
