"""Endorsement analytics (SPEC §11, issue 14, ADR 0033): every figure computed by the database.

`analytics_range_parse` turns the query string into an `AnalyticsRange` (422 on a bad range);
`endorsement_analytics` answers one range for a set of employers with four statements on PostgreSQL:

1. one aggregate pass over the rows received in range: totals by status and type (`COUNT(*) FILTER`) and
   premium debited/credited (`SUM … FILTER`), parallel-safe;
2. the exact median and p95 of RECEIVED → ACTIVE (`percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER
   BY …)`) over the ACTIVE rows only;
3. the top rejection classes (`GROUP BY rejection_class`, REJECTED and FAILED rows of the range);
4. the hourly trend of the 24 hours before the request (or before the end of `to`), one bucket per
   Asia/Kolkata hour, every hour present.

For a partner's employers or every employer, 1, 3 and all but the unfinished hour of 4 read the hourly
rollup instead (`apps/endorsements/rollup.py`, ADR 0047): a few thousand rows whatever the table's size. The
percentiles (2) are always computed from the endorsement rows, but there a duration histogram kept with the
rollup locates the bucket of each rank, so only those buckets' rows are read and sorted (ADR 0053): the same
exact values as sorting every row.

SQLite (the embedded `make run` default) runs the same definitions through the ORM and computes the
percentiles in Python with `percentile_cont`'s linear interpolation: slower, equally exact.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.db import connection, transaction
from django.db.models import Count, Q, QuerySet, Sum
from django.db.models.functions import TruncHour
from django.utils import timezone

from apps.common.errors import DomainValidationError
from apps.employers.selectors import EMPLOYERS_TABLE
from apps.endorsements.models import (
    TERMINAL,
    Endorsement,
    EndorsementBatch,
    EndorsementStatus,
    EndorsementType,
    PremiumDirection,
)
from apps.endorsements.rollup import (
    percentile_cont_at,
    rollup_available,
    rollup_duration_percentiles,
    rollup_figures,
    rollup_per_hour,
    rollup_top_rejection_classes,
)

logger = logging.getLogger(__name__)
IST = ZoneInfo("Asia/Kolkata")
MAX_RANGE_DAYS = 366
EARLIEST_DATE, LATEST_DATE = date(1970, 1, 1), date(9998, 12, 31)
DEFAULT_RANGE_DAYS = 30
TOP_REJECTION_CLASSES = 5
TREND_HOURS = 24
FAILURE_STATUSES = (EndorsementStatus.FAILED, EndorsementStatus.REJECTED)


@dataclass(frozen=True, slots=True)
class AnalyticsRange:
    """`from_date`..`to_date` inclusive, Asia/Kolkata dates of receipt; `start`/`end` the matching aware
    instants (end exclusive: midnight IST after `to_date`); `trend_end` where the 24-hour trend stops
    (the request time, or `end` when `to` is past)."""

    from_date: date
    to_date: date
    start: datetime
    end: datetime
    trend_end: datetime


def _ist_midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=IST)


def _parse_date(raw: str, field: str) -> date:
    try:
        if len(raw) != 10:
            raise ValueError
        day = date.fromisoformat(raw)
    except ValueError:
        raise DomainValidationError({field: "A date as YYYY-MM-DD (Asia/Kolkata) is required."}) from None
    if not EARLIEST_DATE <= day <= LATEST_DATE:
        # Before 1970 Asia/Kolkata had other offsets (+05:21:10 LMT, +06:30 in wartime); no endorsement is that old.
        raise DomainValidationError({field: f"A date from {EARLIEST_DATE} to {LATEST_DATE} is required."})
    return day


def analytics_range_parse(*, from_raw: str | None, to_raw: str | None, now: datetime | None = None) -> AnalyticsRange:
    """The range of `?from=&to=` (dates in Asia/Kolkata, inclusive, on the time an endorsement was received).

    Missing `to` is today (IST); missing `from` is `to` − 29 days (30 days in all). Raises
    `DomainValidationError` (→ 422 naming the field) for a value that is not a date, `from` after `to`, or a
    range over 366 days.
    """
    now = now or timezone.now()
    errors: dict[str, str] = {}
    to_date = from_date = None
    try:
        to_date = _parse_date(to_raw, "to") if to_raw else now.astimezone(IST).date()
    except DomainValidationError as exc:
        errors.update({k: v[0] for k, v in exc.errors.items()})
    try:
        if from_raw:
            from_date = _parse_date(from_raw, "from")
        elif to_date is not None:
            from_date = to_date - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    except DomainValidationError as exc:
        errors.update({k: v[0] for k, v in exc.errors.items()})
    if errors:
        raise DomainValidationError(errors)
    assert from_date is not None
    assert to_date is not None
    if from_date > to_date:
        raise DomainValidationError({"from": "`from` must not be after `to`."})
    if (to_date - from_date).days + 1 > MAX_RANGE_DAYS:
        raise DomainValidationError({"to": f"A range covers at most {MAX_RANGE_DAYS} days."})
    try:
        start, end = _ist_midnight(from_date), _ist_midnight(to_date + timedelta(days=1))
    except OverflowError:  # 9999-12-31 + 1 day
        raise DomainValidationError({"to": "The date is out of range."}) from None
    return AnalyticsRange(from_date=from_date, to_date=to_date, start=start, end=end, trend_end=min(now, end))


def trend_buckets(trend_end: datetime) -> list[datetime]:
    """The 24 Asia/Kolkata hour starts ending with the hour that contains the instant just before
    `trend_end` (an hour-aligned `trend_end`, such as midnight after `to`, is not a bucket of its own)."""
    last = (trend_end - timedelta(microseconds=1)).astimezone(IST).replace(minute=0, second=0, microsecond=0)
    return [last - timedelta(hours=TREND_HOURS - 1 - i) for i in range(TREND_HOURS)]


def percentile_cont(sorted_values: list[float], fraction: float) -> float | None:
    """PostgreSQL's `percentile_cont` over `sorted_values`: linear interpolation between the two nearest ranks
    (`percentile_cont_at`, the one interpolation the histogram path uses too); None for no values."""
    return percentile_cont_at(len(sorted_values), fraction, sorted_values.__getitem__)


def _paise_to_rupees(paise: int) -> str:
    return str((Decimal(paise) / 100).quantize(Decimal("0.01")))


_TABLE = Endorsement._meta.db_table
_STATUS_COLUMNS = ", ".join(f"COUNT(*) FILTER (WHERE status = '{s}')" for s in EndorsementStatus.values)
_TYPE_COLUMNS = ", ".join(f"COUNT(*) FILTER (WHERE type = '{t}')" for t in EndorsementType.values)
# Counts and sums in one pass (parallel-safe aggregates: PostgreSQL may split the scan across workers).
_PG_COUNTS_SQL = f"""
SELECT COUNT(*), {_STATUS_COLUMNS}, {_TYPE_COLUMNS},
       COALESCE(SUM(premium_amount) FILTER (WHERE status = 'ACTIVE' AND premium_direction = 'debit'), 0),
       COALESCE(SUM(premium_amount) FILTER (WHERE status = 'ACTIVE' AND premium_direction = 'credit'), 0)
  FROM {_TABLE}
 WHERE created_at >= %s AND created_at < %s {{employer_clause}}
"""  # noqa: S608 - table name from model metadata, status/type values from TextChoices; values bound
# The exact percentiles over every ACTIVE row in range (listed employers, and the fallback of
# `_rollup_percentiles`). `endorsement_active_seconds` (migration 0005) is the RECEIVED → ACTIVE seconds as
# float8: `date_part` below one day — the same correctly rounded value as the exact numeric `EXTRACT`, at a
# fraction of its cost — and the exact `EXTRACT` otherwise (ADR 0047); PostgreSQL inlines it.
_PG_PERCENTILES_SQL = f"""
SELECT COUNT(*),
       percentile_cont(ARRAY[0.5, 0.95]) WITHIN GROUP (ORDER BY endorsement_active_seconds(created_at, activated_at))
  FROM {_TABLE}
 WHERE status = 'ACTIVE' AND activated_at IS NOT NULL AND created_at >= %s AND created_at < %s {{employer_clause}}
"""  # noqa: S608 - as above
# The sort of every duration in range stays in memory (4 MB, the default, spills 620,000 of them to disk).
PERCENTILE_WORK_MEM = "64MB"
PERCENTILE_FRACTIONS = (0.5, 0.95)


@dataclass(frozen=True, slots=True)
class EmployerScope:
    """Whose endorsements: every employer of `partner_id` (`employer_ids` None: a partner-wide key), the
    listed employers, or — both None — every employer (operators)."""

    partner_id: int | None = None
    employer_ids: tuple[int, ...] | None = None


def _employer_clause(scope: EmployerScope) -> tuple[str, list[Any]]:
    if scope.employer_ids is not None:
        return "AND employer_id = ANY(%s)", [list(scope.employer_ids)]
    if scope.partner_id is not None:
        # A semi-join the planner can estimate (a 5,000-element array bound as a parameter misleads it).
        sql = f"AND employer_id IN (SELECT id FROM {EMPLOYERS_TABLE} WHERE partner_id = %s)"  # noqa: S608 - metadata
        return sql, [scope.partner_id]
    return "", []


def _pg_percentiles(rng: AnalyticsRange, scope: EmployerScope) -> tuple[float | None, float | None, int]:
    """(median, p95 seconds, ACTIVE rows counted) of received → ACTIVE over the range's ACTIVE rows, exact."""
    clause, params = _employer_clause(scope)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(f"SET LOCAL work_mem = '{PERCENTILE_WORK_MEM}'")
        cursor.execute(_PG_PERCENTILES_SQL.format(employer_clause=clause), [rng.start, rng.end, *params])
        row = cursor.fetchone()
    assert row is not None
    activated, percentiles = row
    if not percentiles:
        return None, None, activated
    return float(percentiles[0]), float(percentiles[1]), activated


def _pg_summary(rng: AnalyticsRange, scope: EmployerScope) -> dict[str, Any]:
    clause, params = _employer_clause(scope)
    with connection.cursor() as cursor:
        cursor.execute(_PG_COUNTS_SQL.format(employer_clause=clause), [rng.start, rng.end, *params])
        row = cursor.fetchone()
    assert row is not None
    values = list(row)
    total = values.pop(0)
    by_status = {s: values.pop(0) for s in EndorsementStatus.values}
    by_type = {t: values.pop(0) for t in EndorsementType.values}
    debited, credited = values
    median, p95, activated = _pg_percentiles(rng, scope)
    return {
        "total": total,
        "by_status": by_status,
        "by_type": by_type,
        "debited": int(debited),
        "credited": int(credited),
        "activated": activated,
        "median": median,
        "p95": p95,
    }


def _orm_summary(rows: QuerySet[Endorsement]) -> dict[str, Any]:
    active = Q(status=EndorsementStatus.ACTIVE)
    figures = rows.aggregate(
        total=Count("*"),
        **{f"s_{s}": Count("id", filter=Q(status=s)) for s in EndorsementStatus.values},
        **{f"t_{t}": Count("id", filter=Q(type=t)) for t in EndorsementType.values},
        debited=Sum("premium_amount", filter=active & Q(premium_direction=PremiumDirection.DEBIT)),
        credited=Sum("premium_amount", filter=active & Q(premium_direction=PremiumDirection.CREDIT)),
    )
    durations = sorted(
        (activated - received).total_seconds()
        for received, activated in rows.filter(active, activated_at__isnull=False).values_list(
            "created_at", "activated_at"
        )
        if activated is not None
    )
    return {
        "total": figures["total"],
        "by_status": {s: figures[f"s_{s}"] for s in EndorsementStatus.values},
        "by_type": {t: figures[f"t_{t}"] for t in EndorsementType.values},
        "debited": figures["debited"] or 0,
        "credited": figures["credited"] or 0,
        "activated": len(durations),
        "median": percentile_cont(durations, 0.5),
        "p95": percentile_cont(durations, 0.95),
    }


def _rows(scope: EmployerScope, start: datetime, end: datetime) -> QuerySet[Endorsement]:
    rows = Endorsement.objects.filter(created_at__gte=start, created_at__lt=end).order_by()
    if scope.employer_ids is not None:
        return rows.filter(employer_id__in=scope.employer_ids)
    if scope.partner_id is not None:
        return rows.filter(employer__partner_id=scope.partner_id)
    return rows


def _from_rollup(scope: EmployerScope) -> bool:
    """A partner's or every employer's figures come from the rollup (PostgreSQL); listed employers (one, or a
    restricted key's few) from their rows through the `employer_id` indexes."""
    return scope.employer_ids is None and rollup_available()


def _hour_start(instant: datetime) -> datetime:
    return instant.astimezone(IST).replace(minute=0, second=0, microsecond=0)


def _rollup_percentiles(rng: AnalyticsRange, scope: EmployerScope) -> tuple[float | None, float | None, int]:
    """(median, p95 seconds, ACTIVE rows counted), exact: the duration histogram says which buckets hold the
    ranks and only their rows are sorted (ADR 0053); every row is sorted if the histogram disagrees with them."""
    found = rollup_duration_percentiles(
        partner_id=scope.partner_id,
        from_day=rng.from_date,
        to_day=rng.to_date,
        start=rng.start,
        end=rng.end,
        fractions=PERCENTILE_FRACTIONS,
    )
    if found is None:
        logger.warning("analytics.duration_histogram_mismatch", extra={"partner_id": scope.partner_id})
        return _pg_percentiles(rng, scope)
    median, p95 = found.values
    return median, p95, found.count


def _rollup_summary(rng: AnalyticsRange, scope: EmployerScope) -> dict[str, Any]:
    """Counts and premium sums from the rollup (`rng.start`/`rng.end` are IST midnights, so whole rollup
    hours and days); the exact percentiles from the ACTIVE rows of the histogram's buckets (ADR 0047, 0053)."""
    figures = rollup_figures(partner_id=scope.partner_id, start=rng.start, end=rng.end)
    median, p95, activated = _rollup_percentiles(rng, scope)
    return {
        "total": figures.total,
        "by_status": {s: figures.by_status.get(s, 0) for s in EndorsementStatus.values},
        "by_type": {t: figures.by_type.get(t, 0) for t in EndorsementType.values},
        "debited": figures.debited,
        "credited": figures.credited,
        "activated": activated,
        "median": median,
        "p95": p95,
    }


def _summary(scope: EmployerScope, rng: AnalyticsRange) -> dict[str, Any]:
    """Counts, premium sums (paise) and received → ACTIVE percentiles (seconds) of the range: one statement on
    PostgreSQL, the ORM elsewhere, nothing to read for an empty employer scope."""
    if scope.employer_ids is not None and not scope.employer_ids:
        return {
            "total": 0,
            "by_status": dict.fromkeys(EndorsementStatus.values, 0),
            "by_type": dict.fromkeys(EndorsementType.values, 0),
            "debited": 0,
            "credited": 0,
            "activated": 0,
            "median": None,
            "p95": None,
        }
    if _from_rollup(scope):
        return _rollup_summary(rng, scope)
    if connection.vendor == "postgresql":
        return _pg_summary(rng, scope)
    return _orm_summary(_rows(scope, rng.start, rng.end))


def _top_rejection_classes(scope: EmployerScope, rng: AnalyticsRange) -> list[tuple[str, int]]:
    """[(rejection class, count)] of the range's REJECTED and FAILED rows, most frequent first (at most 5)."""
    if _from_rollup(scope):
        return rollup_top_rejection_classes(
            partner_id=scope.partner_id,
            start=rng.start,
            end=rng.end,
            statuses=tuple(FAILURE_STATUSES),
            limit=TOP_REJECTION_CLASSES,
        )
    return list(
        _rows(scope, rng.start, rng.end)
        .filter(status__in=FAILURE_STATUSES)
        .exclude(rejection_class="")
        .values("rejection_class")
        .annotate(n=Count("*"))
        .order_by("-n", "rejection_class")
        .values_list("rejection_class", "n")[:TOP_REJECTION_CLASSES]
    )


def _per_hour(scope: EmployerScope, start: datetime, end: datetime) -> dict[datetime, int]:
    """{hour (IST, aware): endorsements received in it} between `start` (an IST hour start) and `end`; hours
    with none absent. With the rollup, its whole hours come from there and only the unfinished last hour (when
    `end` is not an hour start) from the endorsement rows."""
    if _from_rollup(scope):
        partial = _hour_start(end)
        counts = rollup_per_hour(partner_id=scope.partner_id, start=start, end=partial)
        if partial < end:
            counts.update(_per_hour_rows(scope, partial, end))
        return {hour.astimezone(IST): n for hour, n in counts.items()}
    return _per_hour_rows(scope, start, end)


def _per_hour_rows(scope: EmployerScope, start: datetime, end: datetime) -> dict[datetime, int]:
    per_hour = dict(
        _rows(scope, start, end)
        .annotate(hour=TruncHour("created_at", tzinfo=IST))
        .values("hour")
        .annotate(n=Count("*"))
        .values_list("hour", "n")
    )
    return {hour.astimezone(IST): n for hour, n in per_hour.items()}


def endorsement_analytics(*, scope: EmployerScope, rng: AnalyticsRange) -> dict[str, Any]:
    """The analytics of the endorsements received in `rng` by the employers of `scope`.

    Shape (JSON-ready): `total`; `by_status` / `by_type` (every value present, zeros included);
    `terminal` and `failure_ratio` = (FAILED + REJECTED) ÷ terminal (ACTIVE, REJECTED, FAILED, CANCELLED),
    4 decimals, null with no terminal row; `received_to_active_seconds` {median, p95, count}: exact
    (`percentile_cont`) over the ACTIVE rows of the range, seconds with 3 decimals, null when none;
    `premium` {debited, credited}: rupee decimal strings, the premium of ACTIVE debit/credit endorsements
    (what was captured from / refunded to the employer's account); `top_rejection_classes` [{class, count}],
    at most 5, REJECTED and FAILED rows with a class, most frequent first; `hourly` 24 × {hour (IST ISO),
    count} received per hour. Source: SPEC §11, issue 14; definitions in ADR 0033.
    """
    summary = _summary(scope, rng)
    rejection_classes = _top_rejection_classes(scope, rng)
    buckets = trend_buckets(rng.trend_end)
    per_hour = _per_hour(scope, buckets[0], rng.trend_end)
    terminal = sum(summary["by_status"][s] for s in TERMINAL)
    failed = sum(summary["by_status"][s] for s in FAILURE_STATUSES)

    def seconds(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    return {
        "from": rng.from_date.isoformat(),
        "to": rng.to_date.isoformat(),
        "timezone": "Asia/Kolkata",
        "total": summary["total"],
        "by_status": summary["by_status"],
        "by_type": summary["by_type"],
        "terminal": terminal,
        "failure_ratio": round(failed / terminal, 4) if terminal else None,
        "received_to_active_seconds": {
            "median": seconds(summary["median"]),
            "p95": seconds(summary["p95"]),
            "count": summary["activated"],
        },
        "premium": {
            "currency": "INR",
            "debited": _paise_to_rupees(summary["debited"]),
            "credited": _paise_to_rupees(summary["credited"]),
        },
        "top_rejection_classes": [{"class": c, "count": n} for c, n in rejection_classes],
        "hourly": [{"hour": b.isoformat(), "count": per_hour.get(b, 0)} for b in buckets],
    }


def endorsement_funnel(*, since: datetime | None = None, now: datetime | None = None) -> dict[str, int]:
    """Endorsements per current status, every status present: those received since `since` (the /ops/ funnel
    shows the last 24 hours), or all of them (`since` None).

    On PostgreSQL the whole Asia/Kolkata hours from `since` to the hour of `now` are summed from the hourly
    rollup (ADR 0047) and only the edges — before the first whole hour, and from the current hour on — are
    counted from the rows through the `created_at` index: two hours of rows at most, whatever the table's size.
    Elsewhere, or without `since`, one GROUP BY over the rows."""
    if since is not None and rollup_available():
        first_whole = _hour_start(since)
        if first_whole < since:
            first_whole += timedelta(hours=1)
        last_whole = _hour_start(now or timezone.now())
        if first_whole < last_whole:
            counts = rollup_figures(partner_id=None, start=first_whole, end=last_whole).by_status
            edges = [_status_counts(created_at__gte=since, created_at__lt=first_whole)] if since < first_whole else []
            edges.append(_status_counts(created_at__gte=last_whole))
            for edge in edges:
                for status, n in edge.items():
                    counts[status] = counts.get(status, 0) + n
            return {s: counts.get(s, 0) for s in EndorsementStatus.values}
    counts = _status_counts(**({"created_at__gte": since} if since is not None else {}))
    return {s: counts.get(s, 0) for s in EndorsementStatus.values}


def _status_counts(**filters: Any) -> dict[str, int]:
    """{status: endorsements} of the rows matching `filters`, statuses with none absent (one GROUP BY)."""
    return dict(Endorsement.objects.filter(**filters).order_by().values_list("status").annotate(n=Count("*")))


def endorsement_status_counts(statuses: tuple[str, ...]) -> dict[str, int]:
    """All-time counts of a few statuses (FAILED, ON_HOLD_*: the rows an operator must act on), read
    index-only from `endorsement_status_idx` whatever the table's size."""
    counts = _status_counts(status__in=statuses)
    return {s: counts.get(s, 0) for s in statuses}


def endorsements_per_hour(*, now: datetime | None = None) -> list[dict[str, Any]]:
    """Received per Asia/Kolkata hour for the 24 hours before `now`, every hour present (the /ops/ chart): the
    whole hours from the hourly rollup on PostgreSQL and the current one from the rows (as the analytics
    trend), the rows' `created_at` index elsewhere."""
    now = now or timezone.now()
    buckets = trend_buckets(now)
    per_hour = _per_hour(EmployerScope(), buckets[0], now)
    return [{"hour": b, "count": per_hour.get(b, 0)} for b in buckets]


def batches_running(*, limit: int = 10) -> list[dict[str, Any]]:
    """Batches neither completed nor cancelled, newest first, each with its progress (`batch_progress`:
    counts per status and the percentage of accepted rows in a terminal state)."""
    from apps.endorsements.selectors import batch_progress

    batches = EndorsementBatch.objects.filter(completed_at__isnull=True, cancelled_at__isnull=True).select_related(
        "employer"
    )
    return [{"batch": batch, **batch_progress(batch)} for batch in batches.order_by("-id")[:limit]]


__all__ = [
    "AnalyticsRange",
    "EmployerScope",
    "analytics_range_parse",
    "batches_running",
    "endorsement_analytics",
    "endorsement_funnel",
    "endorsement_status_counts",
    "endorsements_per_hour",
    "percentile_cont",
    "trend_buckets",
]
