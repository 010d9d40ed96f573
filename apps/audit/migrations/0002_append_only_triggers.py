"""PostgreSQL: refuse UPDATE and DELETE on the audit streams and their seals (append-only).

TRUNCATE is not trapped here: Django's test flush (TransactionTestCase, `manage.py flush`) truncates every
table, and TRUNCATE needs the TRUNCATE privilege, which the production application role is not granted (see
docs/adr/0003-audit-hash-chain.md). The table list is frozen here on purpose: a migration must not change
meaning when the models change later.
"""

from django.db import migrations

APPEND_ONLY_TABLES = (
    "audit_auditevent",
    "audit_piiaccessevent",
    "audit_insurerexchangeevent",
    "audit_jobrunevent",
    "audit_auditseal",
)

# schema_editor.execute() passes params, so a literal % is written %%.
FUNCTION = """
CREATE OR REPLACE FUNCTION keel_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit tables are append-only: %% on %% is not allowed', TG_OP, TG_TABLE_NAME;
END;
$$ LANGUAGE plpgsql;
"""


def install(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute(FUNCTION)
    for table in APPEND_ONLY_TABLES:
        schema_editor.execute(
            f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION keel_audit_append_only()"
        )


def uninstall(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for table in APPEND_ONLY_TABLES:
        schema_editor.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    schema_editor.execute("DROP FUNCTION IF EXISTS keel_audit_append_only()")


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]
    operations = [migrations.RunPython(install, uninstall)]
