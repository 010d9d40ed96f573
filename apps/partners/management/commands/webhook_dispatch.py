"""`manage.py webhook_dispatch [--threads N]`: a dedicated webhook sender, woken by the sequencer's NOTIFY
(PostgreSQL). The lowest-latency path; the `webhooks.dispatch` Celery task (nudge + beat) is the safety net.
Several may run at once: each endpoint is leased to one sender at a time (ADR 0030)."""

from __future__ import annotations

import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from apps.partners.webhooks.dispatch import dispatch_forever


class Command(BaseCommand):
    help = "Send due webhook deliveries until stopped (SIGTERM/SIGINT)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--threads", type=int, default=None, help="endpoints sent to at once")
        parser.add_argument("--idle-seconds", type=float, default=1.0)

    def handle(self, *args: Any, **options: Any) -> None:
        if options["threads"]:
            settings.WEBHOOKS = {**settings.WEBHOOKS, "DISPATCH_THREADS": options["threads"]}
        stopping = {"flag": False}

        def stop(*_: Any) -> None:
            stopping["flag"] = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        delivered = dispatch_forever(should_stop=lambda: stopping["flag"], idle_seconds=options["idle_seconds"])
        self.stdout.write(f"delivered {delivered}")
