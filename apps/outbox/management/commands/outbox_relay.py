from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.outbox.relay import relay_until_empty


class Command(BaseCommand):
    help = "Run a relay loop in the foreground (debugging, benchmarks); Ctrl-C stops it."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="relay until nothing is due, then exit")
        parser.add_argument("--batch-size", type=int)
        parser.add_argument("--idle-sleep", type=float, default=0.05)

    def handle(self, *args: Any, **options: Any) -> None:
        while True:
            published = relay_until_empty(batch_size=options["batch_size"], max_seconds=5.0)
            if options["once"]:
                self.stdout.write(f"Published {published} message(s).")
                return
            if not published:
                time.sleep(options["idle_sleep"])
