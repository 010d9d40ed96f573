"""PostgreSQL: refuse UPDATE and DELETE on the audit streams and their seals (append-only).

TRUNCATE is not trapped: it needs table ownership, which the production application role must not have (see
docs/adr/0003-audit-hash-chain.md), and the test suite truncates tables between transactional tests."""

from django.db import migrations

from apps.audit.models import APPEND_ONLY_TABLES

FUNCTION = """
CREATE OR REPLACE FUNCTION keel_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit tables are append-only: %% on %% is not allowed', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
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


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]
    operations = [migrations.RunPython(install, uninstall)]
