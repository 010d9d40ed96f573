from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps.audit.sealing import seal_all


class Command(BaseCommand):
    help = "Seal every unsealed audit event into its stream's hash chain (beat does this every 10 s)."

    def handle(self, *args: Any, **options: Any) -> None:
        for stream, count in seal_all().items():
            self.stdout.write(f"{stream}: sealed {count}")
