"""PostgreSQL: ledger facts are append-only — a trigger refuses UPDATE and DELETE on entries, transactions,
holds and hold resolutions (corrections are new transactions; a hold's end is a new resolution row).

TRUNCATE is not trapped (Django's test flush uses it; the production role has no TRUNCATE privilege), as for
the audit tables (ADR 0003). The table list is frozen here: a migration must not change meaning later.
"""

from django.db import migrations

from apps.common.migration_ops import append_only_triggers

APPEND_ONLY_TABLES = (
    "ledger_ledgerentry",
    "ledger_ledgertransaction",
    "ledger_hold",
    "ledger_holdresolution",
)


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]
    operations = [
        append_only_triggers(
            tables=APPEND_ONLY_TABLES,
            function="keel_ledger_append_only",
            message="ledger rows are immutable",
            trigger_suffix="_immutable",
        )
    ]
