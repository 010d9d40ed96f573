"""Fast bulk inserts: PostgreSQL `COPY` with ids taken from the table's sequence up front.

`bulk_create` of 10,000 wide rows spends most of its time building model instances and binding parameters;
`COPY` streams the rows in one round trip. Ids are allocated first (`nextval` × n) so callers can write rows
that reference them (history, outbox payloads) in the same transaction. On other databases (SQLite in
`make run`) the callers fall back to `bulk_create`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connection, models


def supports_copy() -> bool:
    return connection.vendor == "postgresql"


def allocate_ids(model: type[models.Model], count: int) -> list[int]:
    """`count` fresh primary keys from the model's id sequence (PostgreSQL)."""
    if count == 0:
        return []
    table = model._meta.db_table
    pk_column = model._meta.pk.column
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)", [table, pk_column, count]
        )
        return [row[0] for row in cursor.fetchall()]


def copy_insert(model: type[models.Model], columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """COPY `rows` (tuples in `columns` order, already in database form: JSON as text) into the model's table.

    Must run inside the caller's transaction; constraints and triggers apply as for INSERT.
    """
    table = connection.ops.quote_name(model._meta.db_table)
    column_list = ", ".join(connection.ops.quote_name(c) for c in columns)
    with connection.cursor() as cursor:
        raw = cursor.cursor  # the psycopg cursor under Django's wrapper
        with raw.copy(f"COPY {table} ({column_list}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
