"""Fast bulk inserts: PostgreSQL `COPY` with ids taken from the table's sequence up front.

`bulk_create` of 10,000 wide rows spends most of its time building model instances and binding parameters;
`COPY` streams the rows in one round trip. Ids are allocated first (`nextval` × n) so callers can write rows
that reference them (history, outbox payloads) in the same transaction. On other databases (SQLite in
`make run`) the callers fall back to `bulk_create`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from django.db import connection, models, transaction
from django.db.models.signals import post_save, pre_save


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


COPY_MIN_ROWS = 100  # below this, one INSERT beats allocating ids + COPY


def copy_create(objs: Sequence[models.Model], *, batch_size: int = 2000) -> list[models.Model]:
    """Insert unsaved model instances — `bulk_create` without its per-value cost, for big append-only writes.

    PostgreSQL with at least `COPY_MIN_ROWS` objects: ids are taken from the table's sequence first (set on the
    objects, as `bulk_create` does), then every concrete column is streamed by `COPY` in the values the fields
    prepare themselves (`pre_save` as for an INSERT — `auto_now_add` stamps — then `get_db_prep_save`: JSON,
    datetimes, IPs …; defaults were applied when the instances were built). Otherwise (fewer rows, SQLite in
    `make run`) Django's `bulk_create`. Must run inside the caller's transaction; constraints and triggers apply
    as for INSERT. Returns `objs`.
    """
    if not objs:
        return list(objs)
    model = type(objs[0])
    if len(objs) == 1 and connection.features.can_return_columns_from_insert and _plain(model):
        # One row (a single request's audit row, partner event, history row): the cached INSERT of
        # `insert_one`, a third cheaper than `bulk_create` compiling its statement per call (issue 15).
        insert_one(objs[0])
        return list(objs)
    if not supports_copy() or len(objs) < COPY_MIN_ROWS:
        return model._default_manager.bulk_create(objs, batch_size=batch_size)
    meta = model._meta
    fields = [f for f in meta.concrete_fields if not f.generated]
    for obj, pk in zip(objs, allocate_ids(model, len(objs)), strict=True):
        obj.pk = pk
        obj._state.adding = False
        obj._state.db = connection.alias
    converters = [_copy_value(f) for f in fields]
    copy_insert(model, [f.column for f in fields], ([c(obj) for c in converters] for obj in objs))
    return list(objs)


def _copy_value(field: models.Field[Any, Any]) -> Callable[[models.Model], Any]:
    """How `copy_create` reads one column of an instance for COPY's text format: JSON serialised by the field's
    own encoder, `auto_now(_add)` stamped by `pre_save`, the attribute as it is otherwise (psycopg writes
    strings, numbers, dates, datetimes, UUIDs and IP strings as PostgreSQL reads them)."""
    attname = field.attname
    if isinstance(field, models.JSONField):
        encoder = field.encoder

        def json_text(obj: models.Model) -> str | None:
            value = getattr(obj, attname)
            return None if value is None else json.dumps(value, cls=encoder)

        return json_text
    if getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
        return lambda obj: field.pre_save(obj, True)
    return lambda obj: getattr(obj, attname)


# (model, database vendor, pk given?) → (INSERT statement, how to prepare each value it binds, in order)
_INSERTS: dict[tuple[type[models.Model], str, bool], tuple[str, tuple[Callable[[models.Model, Any], Any], ...]]] = {}


@functools.cache
def _plain(model: type[models.Model]) -> bool:
    """No database default and no generated column: every column's value comes from the instance; and no
    `pre_save`/`post_save` receiver, which the cached INSERT would skip (the principal cache's invalidation,
    ADR 0054, listens on `APIKey`, `Partner`, `OAuthClient` and `Employer`). Cached per model: receivers are
    connected in the apps' `ready()`, before any insert."""
    if pre_save.has_listeners(model) or post_save.has_listeners(model):
        return False
    return not any(
        getattr(f, "db_default", models.NOT_PROVIDED) is not models.NOT_PROVIDED or getattr(f, "generated", False)
        for f in model._meta.concrete_fields
    )


# Field classes (exact, not subclasses: an encrypted or custom field keeps its own preparation) whose
# `get_db_prep_save` returns a value of these exact types, or None, unchanged on every backend.
_PASSTHROUGH: dict[type[models.Field[Any, Any]], tuple[type, ...]] = {
    models.CharField: (str,),
    models.TextField: (str,),
    models.EmailField: (str,),
    models.SlugField: (str,),
    models.BooleanField: (bool,),
    models.IntegerField: (int,),
    models.BigIntegerField: (int,),
    models.SmallIntegerField: (int,),
    models.PositiveIntegerField: (int,),
    models.PositiveBigIntegerField: (int,),
    models.PositiveSmallIntegerField: (int,),
    models.AutoField: (int,),
    models.BigAutoField: (int,),
}


def _preparer(field: models.Field[Any, Any]) -> Callable[[models.Model, Any], Any]:
    """How `insert_one` prepares `field`'s value: `get_db_prep_save(pre_save(instance, True))`, skipping the
    calls that are identities — `pre_save` where the field does not override it (only `auto_now(_add)` and file
    fields do), `get_db_prep_save` for a value of a type that `_PASSTHROUGH` says the field passes unchanged.
    Half the cost of a hot-path INSERT was these calls (issue 15)."""
    attname = field.attname
    plain_read = type(field).pre_save is models.Field.pre_save
    prepared_type = field.target_field if isinstance(field, models.ForeignKey) else field
    passthrough = _PASSTHROUGH.get(type(prepared_type), ()) if type(field) in (*_PASSTHROUGH, models.ForeignKey) else ()
    prep = field.get_db_prep_save

    def prepare(instance: models.Model, db: Any) -> Any:
        value = getattr(instance, attname) if plain_read else field.pre_save(instance, True)
        if value is None and passthrough:
            return None
        if type(value) in passthrough:
            return value
        return prep(value, connection=db)

    return prepare


def insert_one(instance: models.Model) -> models.Model:
    """`instance.save(force_insert=True)` on the hot paths (issue 15), without the ORM's per-call compilation of
    the INSERT (≈ 1,300 profiler events of a 10,000-event request): one cached statement per model, every
    value prepared as the ORM prepares it (`pre_save` — `auto_now`/`auto_now_add` — then `get_db_prep_save`),
    the generated primary key read back with `RETURNING`. Returns `instance`, saved (pk set, `_state` as after
    `save`). Sends no `pre_save`/`post_save` signals, so it falls back to `save` for a model with receivers of
    them, as for a model with database defaults or generated columns, or a database that cannot return columns
    from an INSERT.
    Raises what the INSERT raises (`IntegrityError` …), like `save`."""
    # The wrapper itself, not the `connection` proxy: every attribute read through the proxy costs a thread-
    # and task-local look-up, and the fields read `connection.ops` once per value.
    db = transaction.get_connection()
    model = type(instance)
    meta = model._meta
    pk_given = instance.pk is not None
    if not (db.features.can_return_columns_from_insert and _plain(model)):
        instance.save(force_insert=True)
        return instance
    key = (model, db.vendor, pk_given)
    cached = _INSERTS.get(key)
    if cached is None:
        fields = tuple(f for f in meta.concrete_fields if pk_given or not f.primary_key)
        quote = db.ops.quote_name
        sql = (
            f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(f.column) for f in fields)}) "  # noqa: S608 - names from model metadata
            f"VALUES ({', '.join(['%s'] * len(fields))}) RETURNING {quote(meta.pk.column)}"
        )
        cached = _INSERTS[key] = (sql, tuple(_preparer(f) for f in fields))
    sql, preparers = cached
    values = [prepare(instance, db) for prepare in preparers]
    with db.cursor() as cursor:
        cursor.execute(sql, values)
        (pk,) = cursor.fetchone()
    if not pk_given:
        setattr(instance, meta.pk.attname, meta.pk.to_python(pk))
    instance._state.adding = False
    instance._state.db = db.alias
    return instance
