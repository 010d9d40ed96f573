"""PostgreSQL: refuse UPDATE and DELETE on the audit streams and their seals (append-only).

TRUNCATE is not trapped here: Django's test flush (TransactionTestCase, `manage.py flush`) truncates every
table, and TRUNCATE needs the TRUNCATE privilege, which the production application role is not granted (see
docs/adr/0003-audit-hash-chain.md). The table list is frozen here on purpose: a migration must not change
meaning when the models change later.
"""

from django.db import migrations

from apps.common.migration_ops import append_only_triggers

APPEND_ONLY_TABLES = (
    "audit_auditevent",
    "audit_piiaccessevent",
    "audit_insurerexchangeevent",
    "audit_jobrunevent",
    "audit_auditseal",
)


class Migration(migrations.Migration):
    dependencies = [("audit", "0001_initial")]
    operations = [
        append_only_triggers(
            tables=APPEND_ONLY_TABLES,
            function="keel_audit_append_only",
            message="audit tables are append-only",
            trigger_suffix="_append_only",
        )
    ]
