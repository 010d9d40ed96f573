"""`manage.py webhook_listen --port 8170 [--secret whsec_…]`: a local receiver that verifies each webhook and
prints it, so a developer sees Keel's webhooks arrive (register `http://127.0.0.1:8170/hooks` with local
settings, which allow http to this machine)."""

from __future__ import annotations

import json
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.partners.webhooks.receiver import Received, Receiver


class Command(BaseCommand):
    help = "Run a local webhook receiver that verifies signatures and prints each event."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--port", type=int, default=8170)
        parser.add_argument(
            "--secret", action="append", default=[], help="whsec_… secret(s) to verify with (repeatable)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        def show(item: Received) -> None:
            mark = {True: "verified", False: "BAD SIGNATURE", None: "unverified (no --secret)"}[item.verified]
            try:
                event = item.json
                line = (
                    f"{event.get('type')} {event.get('id')} seq={event.get('sequence')} {json.dumps(event.get('data'))}"
                )
            except ValueError:
                line = item.body[:200].decode("utf-8", errors="replace")
            self.stdout.write(f"[{mark}] webhook-id={item.webhook_id} {line}")
            self.stdout.flush()

        receiver = Receiver(port=options["port"], secrets=options["secret"], on_request=show, keep=False)
        with receiver:
            self.stdout.write(f"Listening on {receiver.url} (Ctrl-C to stop)")
            self.stdout.flush()
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                self.stdout.write("stopped")
