"""The endorsement rollups (ADR 0047, ADR 0053): PostgreSQL triggers append signed delta rows in the same
transaction as every insert, update and delete of an endorsement (migrations 0004, 0005); this module folds them
(`rollup_compact`, beat every 30 s) and reads them (`rollup_figures`, `rollup_top_rejection_classes`,
`rollup_per_hour`, `rollup_duration_percentiles`).

Two tables: the hourly rollup (counts and premium sums per partner, hour, status, type and rejection class) and
the duration histogram (ACTIVE rows per partner, day and RECEIVED → ACTIVE duration bucket). A key's figure is
the SUM over all of its rows, folded or not, so a read is exact whether or not compaction has run; compaction
only keeps the number of rows a read sums small. The percentiles are never read from a rollup: the histogram
only says which duration bucket holds each rank, and the values come from the endorsement rows of that bucket.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from django.db import connection, transaction

from apps.employers.selectors import EMPLOYERS_TABLE
from apps.endorsements.models import Endorsement, EndorsementDurationRollup, EndorsementRollup

TABLE = EndorsementRollup._meta.db_table
KEY = "partner_id, hour, status, type, rejection_class"
FIGURES = "n, debited, credited, activated"
DURATION_TABLE = EndorsementDurationRollup._meta.db_table
DURATION_KEY = "partner_id, day, bucket"
COMPACT_BATCH = 50_000  # delta rows folded per run at most (their keys' other rows are folded with them)
_LOCK_ID = 0x6B65656C_0047  # pg advisory lock: one compaction at a time ("keel", ADR 0047)


def _compact_sql(table: str, key: str, figures: str) -> str:
    """The keys of the oldest delta rows of `table`; every row of those keys deleted and written back as one
    folded row (none when all of its figures net to zero). Rows inserted by transactions still open are
    invisible to this statement and stay for the next run, so no delta is lost or counted twice."""
    columns = [c.strip() for c in key.split(",")]
    sums = [c.strip() for c in figures.split(",")]
    return f"""
WITH keys AS (
    SELECT DISTINCT {key} FROM (
        SELECT {key} FROM {table} WHERE NOT compacted ORDER BY id LIMIT %s
    ) oldest
), gone AS (
    DELETE FROM {table} r USING keys k
     WHERE {" AND ".join(f"r.{c} = k.{c}" for c in columns)}
    RETURNING {", ".join(f"r.{c}" for c in columns + sums)}
), folded AS (
    INSERT INTO {table} ({key}, {figures}, compacted)
    SELECT {key}, {", ".join(f"SUM({c})" for c in sums)}, true
      FROM gone
     GROUP BY {key}
    HAVING {" OR ".join(f"SUM({c}) <> 0" for c in sums)}
    RETURNING 1
)
SELECT (SELECT COUNT(*) FROM gone), (SELECT COUNT(*) FROM folded)
"""  # noqa: S608 - table and column names from model metadata and constants, values bound


_COMPACT_SQL = _compact_sql(TABLE, KEY, FIGURES)
_COMPACT_DURATION_SQL = _compact_sql(DURATION_TABLE, DURATION_KEY, "n")


def rollup_available() -> bool:
    """Whether the rollup is maintained on this database (PostgreSQL; SQLite reads the endorsements)."""
    return connection.vendor == "postgresql"


def rollup_compact(*, batch: int = COMPACT_BATCH) -> tuple[int, int]:
    """Fold the delta rows of up to `batch` of the oldest deltas' keys of each rollup table (the hourly rollup,
    then the duration histogram) into one row per key, in one transaction. Returns (rows deleted, folded rows
    written), summed over both tables; (0, 0) when another compaction holds the lock or on a database without
    the rollups. Safe to run at any time and concurrently with writers."""
    if not rollup_available():
        return 0, 0
    deleted = folded = 0
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_LOCK_ID])
        row = cursor.fetchone()
        if not row or not row[0]:
            return 0, 0
        for sql in (_COMPACT_SQL, _COMPACT_DURATION_SQL):
            cursor.execute(sql, [batch])
            result = cursor.fetchone()
            assert result is not None
            deleted += int(result[0])
            folded += int(result[1])
    return deleted, folded


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


_ENDORSEMENTS = Endorsement._meta.db_table
# One statement, so the histogram and the rows are read in one snapshot (the triggers keep them consistent in
# every transaction): 1. the histogram of the range summed per bucket; 2. the rows before each bucket (`before`)
# and in all (`total`); 3. the 0-based ranks `percentile_cont` interpolates between, floor and ceil of
# fraction × (total − 1) in float8 as PostgreSQL computes them; 4. the bucket holding each rank; 5. per such
# bucket, its ACTIVE rows in range read index-only from `endorsement_active_bucket_idx` (bucket, created_at),
# sorted, the ranks picked, and how many rows were found (must equal the histogram's count).
_PERCENTILES_SQL = f"""
WITH hist AS (
    SELECT bucket, SUM(n)::bigint AS n FROM {DURATION_TABLE}
     WHERE day >= %(from_day)s AND day <= %(to_day)s {{hist_clause}}
     GROUP BY bucket HAVING SUM(n) <> 0
), cum AS (
    SELECT bucket, n, (SUM(n) OVER (ORDER BY bucket))::bigint - n AS before, (SUM(n) OVER ())::bigint AS total
      FROM hist
), summary AS (
    SELECT COALESCE(MAX(total), 0) AS total, COALESCE(bool_and(n > 0), true) AS sane FROM cum
), ranks AS (
    SELECT DISTINCT r FROM summary s, unnest(%(fractions)s::float8[]) f,
           unnest(ARRAY[floor(f * (s.total - 1)::float8)::bigint, ceil(f * (s.total - 1)::float8)::bigint]) r
     WHERE s.total > 0
), wanted AS (
    SELECT c.bucket, c.n, c.before, array_agg(r.r - c.before ORDER BY r.r) AS offsets
      FROM cum c JOIN ranks r ON r.r >= c.before AND r.r < c.before + c.n
     GROUP BY c.bucket, c.n, c.before
), picked AS (
    SELECT w.n, w.before, w.offsets, s.found, ARRAY(SELECT s.sorted[o + 1] FROM unnest(w.offsets) o) AS vals
      FROM wanted w CROSS JOIN LATERAL (
        SELECT COUNT(*) AS found, array_agg(d ORDER BY d) AS sorted FROM (
            SELECT endorsement_active_seconds(x.created_at, x.activated_at) AS d FROM {_ENDORSEMENTS} x
             WHERE x.status = 'ACTIVE' AND x.activated_at IS NOT NULL
               AND endorsement_duration_bucket(x.created_at, x.activated_at) = w.bucket
               AND x.created_at >= %(start)s AND x.created_at < %(end)s {{row_clause}}
        ) bucket_rows
      ) s
)
SELECT s.total, s.sane, p.n, p.before, p.offsets, p.found, p.vals FROM summary s LEFT JOIN picked p ON true
"""  # noqa: S608 - table names from model metadata, values bound


def percentile_cont_at(count: int, fraction: float, value_at: Callable[[int], float]) -> float | None:
    """PostgreSQL's `percentile_cont(fraction)` (orderedsetaggs.c) over `count` sorted values, `value_at(rank)`
    giving the value at a 0-based rank: the ranks floor and ceil of fraction × (count − 1), linearly interpolated
    as `float8_lerp` does. None when `count` is 0; raises what `value_at` raises for a rank it lacks."""
    if count == 0:
        return None
    position = fraction * (count - 1)
    lower, upper = math.floor(position), math.ceil(position)
    low = value_at(lower)
    return low + (position - lower) * (value_at(upper) - low)


@dataclass(frozen=True, slots=True)
class DurationPercentiles:
    """`count` ACTIVE endorsements (with an `activated_at`) received in range; `values` the RECEIVED → ACTIVE
    seconds at each requested fraction (`percentile_cont`'s interpolation), None when `count` is 0."""

    count: int
    values: tuple[float | None, ...]


def rollup_duration_percentiles(
    *,
    partner_id: int | None,
    from_day: date,
    to_day: date,
    start: datetime,
    end: datetime,
    fractions: tuple[float, ...],
) -> DurationPercentiles | None:
    """Exact `percentile_cont(fractions)` of RECEIVED → ACTIVE seconds (`endorsement_active_seconds`) over the
    ACTIVE endorsements received on the Asia/Kolkata days `from_day`..`to_day` (inclusive; `start`/`end` are
    the same range as instants: the IST midnights of `from_day` and of the day after `to_day`) by the employers
    of `partner_id` (None: every employer). PostgreSQL only.

    The duration histogram locates the bucket of each rank `percentile_cont` needs; only those buckets' rows
    are read and sorted (ADR 0053), so the cost follows the rows of one bucket, not of the range. Returns None
    when the histogram and the rows disagree (a bucket's row count differs, or a rank is in no bucket — only
    when the triggers were bypassed): the caller then sorts every row instead.
    """
    partner_params: dict[str, Any] = {}
    hist_clause = row_clause = ""
    if partner_id is not None:
        hist_clause = "AND partner_id = %(partner)s"
        row_clause = f"AND x.employer_id IN (SELECT id FROM {EMPLOYERS_TABLE} WHERE partner_id = %(partner)s)"  # noqa: S608
        partner_params = {"partner": partner_id}
    sql = _PERCENTILES_SQL.format(hist_clause=hist_clause, row_clause=row_clause)
    params: dict[str, Any] = {
        "from_day": from_day,
        "to_day": to_day,
        "start": start,
        "end": end,
        "fractions": list(fractions),
    }
    with connection.cursor() as cursor:
        cursor.execute(sql, {**params, **partner_params})
        rows = cursor.fetchall()
    total, sane = int(rows[0][0]), bool(rows[0][1])
    if total == 0:
        return DurationPercentiles(count=0, values=tuple(None for _ in fractions))
    values: dict[int, float] = {}
    for _, _, n, before, offsets, found, picked in rows:
        if n is None or found != n:
            return None
        values.update({before + offset: float(value) for offset, value in zip(offsets, picked, strict=True)})
    if not sane:
        return None
    try:
        answers = [percentile_cont_at(total, fraction, values.__getitem__) for fraction in fractions]
    except KeyError:  # a rank in no bucket of the histogram
        return None
    return DurationPercentiles(count=total, values=tuple(answers))


def rollup_status_type_counts() -> dict[tuple[str, str], int]:
    """{(status, type): endorsements} over every row ever received (the `keel_endorsements` gauge)."""
    sql = f"SELECT status, type, SUM(n) FROM {TABLE} GROUP BY status, type HAVING SUM(n) <> 0"  # noqa: S608
    with connection.cursor() as cursor:
        cursor.execute(sql)
        return {(s, t): int(n) for s, t, n in cursor.fetchall()}


__all__ = [
    "DurationPercentiles",
    "RollupFigures",
    "percentile_cont_at",
    "rollup_available",
    "rollup_compact",
    "rollup_duration_percentiles",
    "rollup_figures",
    "rollup_per_hour",
    "rollup_status_type_counts",
    "rollup_top_rejection_classes",
]
