"""The sandbox insurer's behaviour: apply a batch of endorsements once per idempotency key."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from django.db import connection, transaction
from django.db.models import CharField, F, Value
from django.db.models.functions import Cast, Concat
from django.utils import timezone

from apps.insurers.sandbox.models import SandboxApplied, SandboxConfig, SandboxMode
from apps.insurers.sandbox.roster import charges_record, roster_follow


class SandboxInputError(ValueError):
    pass


@dataclass(frozen=True)
class SandboxItem:
    idempotency_key: str
    endorsement_id: int | None
    kind: str
    policy_number: str
    employee_code: str
    effective_date: date
    date_of_birth: date | None
    # What the insurer debits (+) or credits (-) its CD account for this endorsement, paise (its statement).
    charge: int = 0
    # The member as sent (REST and SOAP); the sandbox's roster follows what it confirms when they are all present.
    first_name: str = ""
    last_name: str = ""
    sum_insured: int | None = None


def sandbox_config_for(code: str) -> SandboxConfig:
    config, _ = SandboxConfig.objects.get_or_create(code=code)
    return config


def parse_items(raw_items: Any) -> list[SandboxItem]:
    if not isinstance(raw_items, list) or not raw_items:
        raise SandboxInputError("`endorsements` must be a non-empty list")
    items: list[SandboxItem] = []
    for index, raw in enumerate(raw_items):
        try:
            member = raw.get("member") or {}
            dob = member.get("date_of_birth")
            key = str(raw["idempotency_key"])
            if not key or len(key) > 255:
                raise ValueError("idempotency_key must be 1-255 characters")
            items.append(
                SandboxItem(
                    idempotency_key=key,
                    endorsement_id=int(raw["endorsement_id"]) if raw.get("endorsement_id") is not None else None,
                    kind=str(raw["kind"]),
                    policy_number=str(raw.get("policy_number") or ""),
                    employee_code=str(member.get("employee_code") or ""),
                    effective_date=date.fromisoformat(raw["effective_date"]),
                    date_of_birth=date.fromisoformat(dob) if dob else None,
                    charge=_charge(raw),
                    first_name=str(member.get("first_name") or ""),
                    last_name=str(member.get("last_name") or ""),
                    sum_insured=int(raw["sum_insured"]) if raw.get("sum_insured") is not None else None,
                )
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise SandboxInputError(f"endorsements[{index}] is not valid: {exc}") from exc
    return items


def _charge(raw: dict[str, Any]) -> int:
    amount = int(raw.get("premium_amount") or 0)
    direction = raw.get("premium_direction")
    return amount if direction == "debit" else -amount if direction == "credit" else 0


def age_on(date_of_birth: date, on: date) -> int:
    return on.year - date_of_birth.year - ((on.month, on.day) < (date_of_birth.month, date_of_birth.day))


def _rule_matches(rule: dict[str, Any], item: SandboxItem) -> bool:
    if "kind" in rule:
        kinds = rule["kind"] if isinstance(rule["kind"], list) else [rule["kind"]]
        if item.kind not in kinds:
            return False
    if "min_age_exclusive" in rule and (
        item.date_of_birth is None or age_on(item.date_of_birth, item.effective_date) <= int(rule["min_age_exclusive"])
    ):
        return False
    if "employee_code_prefix" in rule and not item.employee_code.startswith(str(rule["employee_code_prefix"])):
        return False
    if "employee_code_in" in rule and item.employee_code not in rule["employee_code_in"]:
        return False
    return not ("policy_number" in rule and item.policy_number != rule["policy_number"])


def decide(rules: Sequence[dict[str, Any]], item: SandboxItem) -> tuple[str, str]:
    """(outcome, reason): the first matching rule rejects; no match confirms."""
    for rule in rules or []:
        if isinstance(rule, dict) and _rule_matches(rule, item):
            return "rejected", str(rule.get("reason") or "Rejected by sandbox rule")
    return "confirmed", ""


_UPSERT_COLUMNS = (
    "code",
    "idempotency_key",
    "endorsement_id",
    "kind",
    "employee_code",
    "policy_number",
    "outcome",
    "insurer_reference",
    "rejection_reason",
    "times_seen",
    "applied_at",
    "last_seen_at",
)


UPSERT_CHUNK = 2000  # rows per statement: 12 parameters each stays far below PostgreSQL's 65,535


def _upsert(config: SandboxConfig, items: Sequence[SandboxItem]) -> list[tuple[Any, ...]]:
    """`_upsert_chunk` over chunks of `UPSERT_CHUNK` items (a 10,000-row batch file is one call)."""
    rows: list[tuple[Any, ...]] = []
    for start in range(0, len(items), UPSERT_CHUNK):
        rows += _upsert_chunk(config, items[start : start + UPSERT_CHUNK])
    return rows


def _upsert_chunk(config: SandboxConfig, items: Sequence[SandboxItem]) -> list[tuple[Any, ...]]:
    """Insert the items not seen before; count a sighting of those that were. One statement, so a key is
    applied at most once even when two requests race (the second waits on the first's row, then counts)."""
    table = SandboxApplied._meta.db_table
    now = timezone.now()
    rules = config.rejection_rules or []
    placeholders: list[str] = []
    params: list[Any] = []
    for item in items:
        outcome, reason = decide(rules, item)
        placeholders.append("(" + ", ".join(["%s"] * len(_UPSERT_COLUMNS)) + ")")
        params.extend(
            [
                config.code,
                item.idempotency_key,
                item.endorsement_id,
                item.kind[:16],
                item.employee_code[:64],
                item.policy_number[:64],
                outcome,
                "",
                reason[:500],
                1,
                now,
                now,
            ]
        )
    sql = (
        f"INSERT INTO {table} ({', '.join(_UPSERT_COLUMNS)}) VALUES {', '.join(placeholders)} "  # noqa: S608
        f"ON CONFLICT (code, idempotency_key) DO UPDATE SET times_seen = {table}.times_seen + 1, "
        "last_seen_at = EXCLUDED.last_seen_at "
        "RETURNING id, idempotency_key, outcome, insurer_reference, rejection_reason, times_seen, "
        "callback_delivered_at"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def sandbox_apply(*, config: SandboxConfig, items: Sequence[SandboxItem]) -> tuple[list[dict[str, Any]], list[int]]:
    """Apply a batch; returns (per-item results in request order, ids whose callback is still owed).

    1. One upsert for the distinct keys (a key repeated inside the batch counts as extra sightings).
    2. New confirmations get their reference `SBX-<id>` in the same transaction, so a racing replay that
       waited on the row sees it; their charges go on the statement and the roster follows them
       (reconciliation, ADR 0040).
    """
    counts = Counter(item.idempotency_key for item in items)
    distinct = list({item.idempotency_key: item for item in items}.values())
    with transaction.atomic():
        rows = _upsert(config, distinct)
        new_confirmed = [row[0] for row in rows if row[5] == 1 and row[2] == "confirmed" and not row[3]]
        if new_confirmed:
            SandboxApplied.objects.filter(pk__in=new_confirmed).update(
                insurer_reference=Concat(Value("SBX-"), Cast(F("id"), output_field=CharField()))
            )
            confirmed_keys = {row[1] for row in rows if row[0] in set(new_confirmed)}
            charges_record(code=config.code, items=distinct, confirmed_keys=confirmed_keys)
            roster_follow(code=config.code, items=distinct, confirmed_keys=confirmed_keys)
        extra = [key for key, n in counts.items() if n > 1]
        for key in extra:
            SandboxApplied.objects.filter(code=config.code, idempotency_key=key).update(
                times_seen=F("times_seen") + counts[key] - 1
            )
    by_key = {}
    newly_confirmed = set(new_confirmed)
    owed: list[int] = []
    callback_mode = config.mode == SandboxMode.CALLBACK and bool(config.callback_url and config.callback_secret)
    for row_id, key, outcome, reference, reason, times_seen, delivered_at in rows:
        reference = reference or (f"SBX-{row_id}" if row_id in newly_confirmed else "")
        if callback_mode:
            if delivered_at is None:
                owed.append(row_id)
            by_key[key] = {"idempotency_key": key, "outcome": "pending", "replayed": times_seen > 1}
        else:
            result: dict[str, Any] = {"idempotency_key": key, "outcome": outcome, "replayed": times_seen > 1}
            if outcome == "confirmed":
                result["insurer_reference"] = reference
            else:
                result["reason"] = reason
            by_key[key] = result
    return [by_key[item.idempotency_key] for item in items], owed
