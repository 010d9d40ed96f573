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


def bulk_update(objs: Sequence[models.Model], fields: Sequence[str], *, batch_size: int = 1000) -> int:
    """Write each object's own values of `fields` — Django's `bulk_update`, without its cost.

    Django spells a bulk update as one `CASE WHEN id = … THEN …` per field and row, which costs ≈ 0.5 s of
    Python for 500 rows × 5 fields. On PostgreSQL this sends one `UPDATE … FROM unnest(%s::type[], …)` per
    batch: one array parameter per column, the values prepared by the fields themselves (JSON, dates, …).
    Elsewhere (SQLite in `make run`) it falls back to Django's. Returns the number of rows updated.
    """
    if not objs or not fields:
        return 0
    model = type(objs[0])
    if connection.vendor != "postgresql":
        return model._default_manager.bulk_update(objs, fields, batch_size=batch_size)
    meta = model._meta
    pk = meta.pk
    assert pk is not None
    columns: list[models.Field[Any, Any]] = []
    for name in fields:
        column = meta.get_field(name)
        if not isinstance(column, models.Field) or not column.concrete:
            raise ValueError(f"{model.__name__}.{name} is not a concrete column")
        columns.append(column)
    qn = connection.ops.quote_name
    arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in [pk, *columns])
    names = ", ".join(qn(f.column) for f in [pk, *columns])  # type: ignore[arg-type]
    assignments = ", ".join(f"{qn(f.column)} = v.{qn(f.column)}" for f in columns)
    table = qn(meta.db_table)
    sql = (
        f"UPDATE {table} SET {assignments} FROM unnest({arrays}) AS v({names}) "  # noqa: S608 - identifiers only
        f"WHERE {table}.{qn(pk.column)} = v.{qn(pk.column)}"
    )
    updated = 0
    with connection.cursor() as cursor:
        for start in range(0, len(objs), batch_size):
            batch = objs[start : start + batch_size]
            params = [[obj.pk for obj in batch]]
            for f in columns:
                params.append([f.get_db_prep_save(getattr(obj, f.attname), connection) for obj in batch])
            cursor.execute(sql, params)
            updated += cursor.rowcount
    return updated


def copy_create(objs: Sequence[models.Model]) -> list[models.Model]:
    """`bulk_create` by `COPY` on PostgreSQL for unsaved instances of one model: ids allocated from the
    sequence and set on the instances, every concrete column written with the field's own database value
    (`get_db_prep_save`: JSON, addresses, dates as Django would bind them). Returns `objs`, saved.

    For the hot insert paths (history, audit and partner events of bulk transitions): Django 5.2 binds a
    bulk INSERT as one array per column (`unnest`), and building those arrays cost more than the rows' own
    work. Must run inside the caller's transaction. Elsewhere (SQLite) it is `bulk_create`.
    """
    if not objs:
        return []
    model = type(objs[0])
    if not supports_copy():
        return model._default_manager.bulk_create(list(objs), batch_size=1000)
    meta = model._meta
    pk = meta.pk
    assert pk is not None
    fields = [f for f in meta.concrete_fields if f is not pk]
    for obj, pk_value in zip(objs, allocate_ids(model, len(objs)), strict=True):
        setattr(obj, pk.attname, pk_value)
        obj._state.adding = False
        obj._state.db = connection.alias
    for f in fields:  # defaults and auto_now(_add) columns, as `save()` fills them
        if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False):
            for obj in objs:
                if getattr(obj, f.attname) is None:
                    f.pre_save(obj, add=True)
    copy_insert(
        model,
        [pk.column, *(f.column for f in fields)],
        (
            (getattr(obj, pk.attname), *(f.get_db_prep_save(getattr(obj, f.attname), connection) for f in fields))
            for obj in objs
        ),
    )
    return list(objs)
