"""Insurer callback signing secrets are sealed at rest (ADR 0044): seal every plaintext `whsec_…` in place.

Reads both forms here only (a row already sealed is left alone); from now on the application opens sealed
values only. Reversible: the reverse opens them again.
"""

from django.db import migrations, models


def _rows(apps):
    Insurer = apps.get_model("insurers", "Insurer")
    SandboxConfig = apps.get_model("insurers", "SandboxConfig")
    return [(Insurer, "insurer"), (SandboxConfig, "sandbox")]


def seal_existing(apps, schema_editor):
    from apps.common.secretbox import is_sealed
    from apps.insurers.callback_secrets import callback_secret_seal

    for model, owner in _rows(apps):
        for row in model.objects.exclude(callback_secret="").only("pk", "code", "callback_secret").iterator():
            if not is_sealed(row.callback_secret):
                sealed = callback_secret_seal(row.callback_secret, insurer_code=row.code, owner=owner)
                model.objects.filter(pk=row.pk).update(callback_secret=sealed)


def open_existing(apps, schema_editor):
    from apps.common.secretbox import is_sealed
    from apps.insurers.callback_secrets import callback_secret_open

    for model, owner in _rows(apps):
        for row in model.objects.exclude(callback_secret="").only("pk", "code", "callback_secret").iterator():
            if is_sealed(row.callback_secret):
                plain = callback_secret_open(row.callback_secret, insurer_code=row.code, owner=owner)
                model.objects.filter(pk=row.pk).update(callback_secret=plain)


class Migration(migrations.Migration):
    dependencies = [
        ("insurers", "0005_sandbox_roster"),
    ]

    operations = [
        migrations.AlterField(
            model_name="insurer",
            name="callback_secret",
            field=models.CharField(blank=True, help_text="whsec_… shared secret, sealed at rest", max_length=200),
        ),
        migrations.AlterField(
            model_name="sandboxconfig",
            name="callback_secret",
            field=models.CharField(
                blank=True, help_text="whsec_… (the Insurer's secret), sealed at rest (ADR 0044)", max_length=200
            ),
        ),
        migrations.RunPython(seal_existing, open_existing),
    ]
