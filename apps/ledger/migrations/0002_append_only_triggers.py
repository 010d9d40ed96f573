"""PostgreSQL: ledger facts are append-only — a trigger refuses UPDATE and DELETE on entries, transactions,
holds and hold resolutions (corrections are new transactions; a hold's end is a new resolution row).

TRUNCATE is not trapped (Django's test flush uses it; the production role has no TRUNCATE privilege), as for
the audit tables (ADR 0003). The table list is frozen here: a migration must not change meaning later.
"""

from django.db import migrations

APPEND_ONLY_TABLES = (
    "ledger_ledgerentry",
    "ledger_ledgertransaction",
    "ledger_hold",
    "ledger_holdresolution",
)

# schema_editor.execute() passes params, so a literal % is written %%.
FUNCTION = """
CREATE OR REPLACE FUNCTION keel_ledger_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'ledger rows are immutable: %% on %% is not allowed', TG_OP, TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;
"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTION)
    for table in APPEND_ONLY_TABLES:
        schema_editor.execute(
            f"CREATE TRIGGER {table}_immutable BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION keel_ledger_append_only()"
        )


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in APPEND_ONLY_TABLES:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_immutable ON {table}")
    schema_editor.execute("DROP FUNCTION IF EXISTS keel_ledger_append_only()")


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]
    operations = [migrations.RunPython(install, uninstall)]
