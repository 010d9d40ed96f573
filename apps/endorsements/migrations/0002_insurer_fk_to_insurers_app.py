"""State only: `Insurer` now lives in the insurers app (same table), so the foreign key's target moves."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("endorsements", "0001_initial"),
        ("insurers", "0002_insurer_moved_from_employers"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="endorsement",
                    name="insurer",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="+", to="insurers.insurer"
                    ),
                ),
            ],
            database_operations=[],
        ),
    ]
