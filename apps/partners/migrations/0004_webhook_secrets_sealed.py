"""Webhook signing secrets are sealed at rest (ADR 0042): widen the column and seal the plaintext ones."""

from django.db import migrations, models


def seal_existing(apps, schema_editor):
    from apps.common.secretbox import is_sealed
    from apps.partners.webhooks.secrets import secret_seal

    WebhookSecret = apps.get_model("partners", "WebhookSecret")
    for row in WebhookSecret.objects.all().only("pk", "endpoint_id", "secret").iterator():
        if not is_sealed(row.secret):
            WebhookSecret.objects.filter(pk=row.pk).update(secret=secret_seal(row.secret, endpoint_id=row.endpoint_id))


def open_existing(apps, schema_editor):
    from apps.common.secretbox import is_sealed
    from apps.partners.webhooks.secrets import secret_open

    WebhookSecret = apps.get_model("partners", "WebhookSecret")
    for row in WebhookSecret.objects.all().only("pk", "endpoint_id", "secret").iterator():
        if is_sealed(row.secret):
            WebhookSecret.objects.filter(pk=row.pk).update(secret=secret_open(row.secret, endpoint_id=row.endpoint_id))


class Migration(migrations.Migration):
    dependencies = [
        ("partners", "0003_webhook_delivery_order_index"),
    ]

    operations = [
        migrations.AlterField(
            model_name="webhooksecret",
            name="secret",
            field=models.CharField(max_length=200),
        ),
        migrations.RunPython(seal_existing, open_existing),
    ]
