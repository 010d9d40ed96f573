from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.outbox.selectors import outbox_stats


class Command(BaseCommand):
    help = "Outbox counts by status and the oldest pending row's age."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true")

    def handle(self, *args: Any, **options: Any) -> None:
        stats = outbox_stats()
        if options["json"]:
            self.stdout.write(json.dumps(stats))
            return
        for name, value in stats.items():
            self.stdout.write(f"{name:>28}: {value}")
