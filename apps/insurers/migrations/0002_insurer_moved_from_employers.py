"""`Insurer` moves from the employers app to this one (SPEC §5). State only: the table keeps its name
(`employers_insurer`), its rows, sequence and constraints; nothing in the database changes."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("insurers", "0001_initial"),
        ("employers", "0002_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="Insurer",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("code", models.SlugField(max_length=40, unique=True)),
                        ("name", models.CharField(max_length=120)),
                        (
                            "protocol",
                            models.CharField(
                                choices=[("rest", "REST (JSON over HTTPS)"), ("soap", "SOAP"), ("file", "File exchange")],
                                default="rest",
                                max_length=8,
                            ),
                        ),
                        ("endpoint", models.CharField(blank=True, help_text="Base URL (rest/soap) or WSDL.", max_length=500)),
                        ("outbound_folder", models.CharField(blank=True, max_length=500)),
                        ("inbound_folder", models.CharField(blank=True, max_length=500)),
                        ("credentials", models.TextField(blank=True)),
                        ("callback_secret", models.CharField(blank=True, help_text="whsec_… shared secret", max_length=200)),
                        ("rate_limit_per_minute", models.PositiveIntegerField(default=600)),
                        ("batch_size", models.PositiveIntegerField(default=100)),
                        ("batch_window_seconds", models.PositiveIntegerField(default=5)),
                        ("is_active", models.BooleanField(default=True)),
                        ("created_at", models.DateTimeField(auto_now_add=True)),
                    ],
                    options={
                        "db_table": "employers_insurer",
                        "ordering": ("code",),
                        "constraints": [
                            models.CheckConstraint(
                                condition=models.Q(("batch_size__gte", 1)), name="insurer_batch_size_positive"
                            )
                        ],
                    },
                ),
                migrations.AlterField(
                    model_name="insurersubmission",
                    name="insurer",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="submissions", to="insurers.insurer"
                    ),
                ),
                migrations.AlterField(
                    model_name="callbackevent",
                    name="insurer",
                    field=models.ForeignKey(
                        on_delete=django.db.models.deletion.PROTECT, related_name="callback_events", to="insurers.insurer"
                    ),
                ),
            ],
            database_operations=[],
        ),
    ]
