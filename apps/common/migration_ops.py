"""Reusable migration operations."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import migrations


def append_only_triggers(
    *, tables: Sequence[str], function: str, message: str, trigger_suffix: str
) -> migrations.RunPython:
    """PostgreSQL: a row trigger on each table refuses UPDATE and DELETE with `message` (append-only facts).

    A no-op on other databases (SQLite in `make run`), where the services are the only writers. TRUNCATE is
    not trapped: Django's test flush truncates tables, and the production role has no TRUNCATE privilege.
    Callers freeze their table list in the migration, so a migration never changes meaning later.
    """
    # schema_editor.execute() passes params, so a literal % is written %%.
    create_function = f"""
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '{message}: %% on %% is not allowed', TG_OP, TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;
"""

    def install(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return
        schema_editor.execute(create_function)
        for table in tables:
            schema_editor.execute(
                f"CREATE TRIGGER {table}{trigger_suffix} BEFORE UPDATE OR DELETE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {function}()"
            )

    def uninstall(apps: Any, schema_editor: Any) -> None:
        if schema_editor.connection.vendor != "postgresql":
            return
        for table in tables:
            schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}{trigger_suffix} ON {table}")
        schema_editor.execute(f"DROP FUNCTION IF EXISTS {function}()")

    return migrations.RunPython(install, uninstall)
