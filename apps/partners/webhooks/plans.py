"""The dispatcher's statements are planned for the values they run with, never from a cached plan (ADR 0059).

PostgreSQL keeps a *generic* plan for a statement it has run five times in a session — psycopg's server-side
prepared statements (`DATABASE_PREPARE_THRESHOLD`) and, whatever the client does, the plan of every foreign-key
check (`SELECT 1 FROM ONLY partners_webhookdelivery x WHERE id = $1 FOR KEY SHARE`, one per attempt row and one
per delivery row at commit). A generic plan is made for the table as it was then and kept until the table is
next ANALYZEd. The dispatcher's tables grow from empty at 1,000 rows a second; a plan made while
`partners_webhookdelivery` was a page or two is a sequential scan, and it stayed one while the table grew to
16,000 rows in a minute in which autovacuum never visited the database: each foreign-key check read the whole
table, so recording an attempt cost more round after round (bench/webhooks.py, docs/benchmarks.md). A generic
plan also cannot use the partial indexes on `status = 'pending'` when the status is a parameter.

`plan_cache_mode = force_custom_plan` makes PostgreSQL plan each execution with its parameter values and the
table's current size (a primary-key lookup is then an index scan at any size), at the cost of planning each
time: tens of microseconds for these statements.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from django.db import DatabaseError, connection

# Transaction-scoped (`is_local`): lasts until this transaction ends — through the deferred foreign-key checks
# that run at its commit — and never leaks into the pooled session. A select-list item, so a statement that
# opens the transaction anyway (the sequencer's lock) sets it without another round trip.
PLAN_FOR_VALUES = "set_config('plan_cache_mode', 'force_custom_plan', true)"


def plan_for_values_in_transaction() -> None:
    """Plan every statement, and every foreign-key check at commit, of the current transaction for its values
    (PostgreSQL; nothing elsewhere). Must run inside the transaction (`transaction.atomic`)."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT {PLAN_FOR_VALUES}")


@contextlib.contextmanager
def plan_for_values_in_session(*, commit_without_waiting_for_disk: bool = False) -> Iterator[None]:
    """For the block: every statement of this thread's database session — including the autocommit ones and
    their foreign-key checks — is planned for its values (PostgreSQL; nothing elsewhere). One round trip to set, one per
    setting to reset: meant for an endpoint run, which holds its session for up to `RUN_DRAIN_SECONDS`. The
    RESET gives the pooled connection back as it was; a session that broke meanwhile is discarded by the pool.

    With `commit_without_waiting_for_disk`, the session's commits also do not wait for the WAL flush
    (`synchronous_commit = off`, in the same statement): what a database crash can lose is the last fraction of
    a second of commits, which for an endpoint run's delivery records means those deliveries are sent again, with
    the same `webhook-id` — the at-least-once contract of SPEC §10 (ADR 0062). A transaction in the block that
    must be durable says `SET LOCAL synchronous_commit = on`."""
    if connection.vendor != "postgresql":
        yield
        return
    settings = {"plan_cache_mode": "force_custom_plan"}
    if commit_without_waiting_for_disk:
        settings["synchronous_commit"] = "off"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT " + ", ".join("set_config(%s, %s, false)" for _ in settings),
            [value for item in settings.items() for value in item],
        )
    try:
        yield
    finally:
        with contextlib.suppress(DatabaseError), connection.cursor() as cursor:
            for name in settings:
                cursor.execute(f"RESET {name}")
