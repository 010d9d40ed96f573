"""State only: `Insurer` moved to the insurers app (SPEC §5) with its table (`employers_insurer`) unchanged.
Every foreign key to it is repointed first (insurers 0002, endorsements 0002), then the old state is dropped."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("employers", "0002_initial"),
        ("insurers", "0002_insurer_moved_from_employers"),
        ("endorsements", "0002_insurer_fk_to_insurers_app"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="policy",
                    name="insurer",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="policies", to="insurers.insurer"
                    ),
                ),
                migrations.DeleteModel(name="Insurer"),
            ],
            database_operations=[],
        ),
    ]
