"""The endorsement hourly rollup (ADR 0047): PostgreSQL triggers append signed delta rows in the same
transaction as every insert, update and delete of an endorsement (migration 0004); this module folds them
(`rollup_compact`, beat every 30 s) and reads them (`rollup_figures`, `rollup_top_rejection_classes`,
`rollup_per_hour`).

A key's figure is the SUM over all of its rows, folded or not, so a read is exact whether or not compaction
has run; compaction only keeps the number of rows a read sums small. Counts and premium sums only: the
received → ACTIVE percentiles are read from the endorsement rows themselves (issue 14).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction

from apps.endorsements.models import EndorsementRollup

TABLE = EndorsementRollup._meta.db_table
KEY = "partner_id, hour, status, type, rejection_class"
FIGURES = "n, debited, credited, activated"
COMPACT_BATCH = 50_000  # delta rows folded per run at most (their keys' other rows are folded with them)
_LOCK_ID = 0x6B65656C_0047  # pg advisory lock: one compaction at a time ("keel", ADR 0047)

# The keys of the oldest delta rows; every row of those keys deleted and written back as one folded row
# (none when all of its figures net to zero). Rows inserted by transactions still open are invisible to
# this statement and stay for the next run, so no delta is lost or counted twice.
_COMPACT_SQL = f"""
WITH keys AS (
    SELECT DISTINCT {KEY} FROM (
        SELECT {KEY} FROM {TABLE} WHERE NOT compacted ORDER BY id LIMIT %s
    ) oldest
), gone AS (
    DELETE FROM {TABLE} r USING keys k
     WHERE r.partner_id = k.partner_id AND r.hour = k.hour AND r.status = k.status AND r.type = k.type
       AND r.rejection_class = k.rejection_class
    RETURNING r.partner_id, r.hour, r.status, r.type, r.rejection_class, r.n, r.debited, r.credited, r.activated
), folded AS (
    INSERT INTO {TABLE} ({KEY}, {FIGURES}, compacted)
    SELECT {KEY}, SUM(n), SUM(debited), SUM(credited), SUM(activated), true
      FROM gone
     GROUP BY {KEY}
    HAVING SUM(n) <> 0 OR SUM(debited) <> 0 OR SUM(credited) <> 0 OR SUM(activated) <> 0
    RETURNING 1
)
SELECT (SELECT COUNT(*) FROM gone), (SELECT COUNT(*) FROM folded)
"""  # noqa: S608 - table name from model metadata, values bound


def rollup_available() -> bool:
    """Whether the rollup is maintained on this database (PostgreSQL; SQLite reads the endorsements)."""
    return connection.vendor == "postgresql"


def rollup_compact(*, batch: int = COMPACT_BATCH) -> tuple[int, int]:
    """Fold the delta rows of up to `batch` of the oldest deltas' keys into one row per key, in one
    transaction. Returns (rows deleted, folded rows written); (0, 0) when another compaction holds the lock
    or on a database without the rollup. Safe to run at any time and concurrently with writers."""
    if not rollup_available():
        return 0, 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_LOCK_ID])
        row = cursor.fetchone()
        if not row or not row[0]:
            return 0, 0
        cursor.execute(_COMPACT_SQL, [batch])
        result = cursor.fetchone()
    assert result is not None
    return int(result[0]), int(result[1])


@dataclass(frozen=True, slots=True)
class RollupFigures:
    """Sums over a range: `total`, per status and per type counts (only keys that occur), `debited` and
    `credited` paise of ACTIVE debit/credit endorsements, `activated` ACTIVE rows with an `activated_at`."""

    total: int
    by_status: dict[str, int]
    by_type: dict[str, int]
    debited: int
    credited: int
    activated: int


def _partner_clause(partner_id: int | None) -> tuple[str, list[Any]]:
    return ("AND partner_id = %s", [partner_id]) if partner_id is not None else ("", [])


def rollup_figures(*, partner_id: int | None, start: datetime, end: datetime) -> RollupFigures:
    """The sums of the endorsements received in [`start`, `end`) — both Asia/Kolkata hour starts — by the
    employers of `partner_id` (None: every partner). PostgreSQL only."""
    clause, params = _partner_clause(partner_id)
    sql = f"""
        SELECT status, type, SUM(n), SUM(debited), SUM(credited), SUM(activated)
          FROM {TABLE} WHERE hour >= %s AND hour < %s {clause}
         GROUP BY status, type
    """  # noqa: S608 - as above
    by_status: dict[str, int] = {}
    by_type: dict[str, int] = {}
    total = debited = credited = activated = 0
    with connection.cursor() as cursor:
        cursor.execute(sql, [start, end, *params])
        for status, type_, n, deb, cred, act in cursor.fetchall():
            by_status[status] = by_status.get(status, 0) + int(n)
            by_type[type_] = by_type.get(type_, 0) + int(n)
            total += int(n)
            debited += int(deb)
            credited += int(cred)
            activated += int(act)
    return RollupFigures(total, by_status, by_type, debited, credited, activated)


def rollup_top_rejection_classes(
    *, partner_id: int | None, start: datetime, end: datetime, statuses: tuple[str, ...], limit: int
) -> list[tuple[str, int]]:
    """[(rejection class, count)] of the endorsements in `statuses` received in [`start`, `end`), most
    frequent first then by class in the database's collation (as the direct query orders), at most `limit`."""
    clause, params = _partner_clause(partner_id)
    sql = f"""
        SELECT rejection_class, SUM(n) FROM {TABLE}
         WHERE hour >= %s AND hour < %s AND status = ANY(%s) AND rejection_class <> '' {clause}
         GROUP BY rejection_class HAVING SUM(n) > 0
         ORDER BY SUM(n) DESC, rejection_class LIMIT %s
    """  # noqa: S608 - as above
    with connection.cursor() as cursor:
        cursor.execute(sql, [start, end, list(statuses), *params, limit])
        return [(c, int(n)) for c, n in cursor.fetchall()]


def rollup_per_hour(*, partner_id: int | None, start: datetime, end: datetime) -> dict[datetime, int]:
    """{hour start (aware): endorsements received in it} for the whole hours in [`start`, `end`); hours with
    none absent."""
    clause, params = _partner_clause(partner_id)
    sql = f"""
        SELECT hour, SUM(n) FROM {TABLE} WHERE hour >= %s AND hour < %s {clause}
         GROUP BY hour HAVING SUM(n) <> 0
    """  # noqa: S608 - as above
    with connection.cursor() as cursor:
        cursor.execute(sql, [start, end, *params])
        return {hour: int(n) for hour, n in cursor.fetchall()}


def rollup_status_type_counts() -> dict[tuple[str, str], int]:
    """{(status, type): endorsements} over every row ever received (the `keel_endorsements` gauge)."""
    sql = f"SELECT status, type, SUM(n) FROM {TABLE} GROUP BY status, type HAVING SUM(n) <> 0"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return {(s, t): int(n) for s, t, n in cursor.fetchall()}


__all__ = [
    "RollupFigures",
    "rollup_available",
    "rollup_compact",
    "rollup_figures",
    "rollup_per_hour",
    "rollup_status_type_counts",
    "rollup_top_rejection_classes",
]
