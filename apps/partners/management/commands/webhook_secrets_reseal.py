from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.partners.webhooks.secrets import secrets_reseal


class Command(BaseCommand):
    help = (
        "Re-seal every webhook signing secret under the newest WEBHOOK_SECRETS_KEY (the first of NEW,OLD,…). "
        "Run after prepending a new key; drop the old key only once this reports 0 unreadable (ADR 0046)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args: Any, **options: Any) -> None:
        counts = secrets_reseal(batch_size=options["batch_size"])
        self.stdout.write(
            f"Re-sealed {counts['resealed']} secret(s); {counts['current']} already under the newest key; "
            f"{counts['unreadable']} unreadable."
        )
        if counts["unreadable"]:
            raise CommandError(
                f"{counts['unreadable']} secret(s) open with no configured key (see webhooks.secret_unreadable "
                "in the log): keep the old key(s) in WEBHOOK_SECRETS_KEY, or have the partners rotate those secrets."
            )
