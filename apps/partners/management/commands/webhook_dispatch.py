"""`manage.py webhook_dispatch [--threads N]`: a dedicated webhook sender, woken by the sequencer's NOTIFY
(PostgreSQL). The lowest-latency path; the `webhooks.dispatch` Celery task (nudge + beat) is the safety net.
Several may run at once: each endpoint is leased to one sender at a time (ADR 0030).

The process sets a short GIL switch interval (`--switch-interval`, 0.5 ms instead of Python's 5 ms): its
threads mostly wait on sockets, and each endpoint sends one request at a time, so a thread whose answer has
arrived must not wait 5 ms for the interpreter while another thread serialises JSON (ADR 0046)."""

from __future__ import annotations

import signal
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser

from apps.common.heap import heap_freeze
from apps.partners.webhooks.dispatch import dispatch_forever, pool_reserve


class Command(BaseCommand):
    help = "Send due webhook deliveries until stopped (SIGTERM/SIGINT)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--threads", type=int, default=None, help="endpoints sent to at once")
        parser.add_argument("--idle-seconds", type=float, default=1.0)
        parser.add_argument(
            "--switch-interval", type=float, default=0.0005, help="GIL switch interval in seconds (Python: 0.005)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["threads"]:
            settings.WEBHOOKS = {**settings.WEBHOOKS, "DISPATCH_THREADS": options["threads"]}
        pool_reserve(int(settings.WEBHOOKS["DISPATCH_THREADS"]))
        if options["switch_interval"] > 0:
            sys.setswitchinterval(options["switch_interval"])
        heap_freeze()  # a full collection over the loaded app took 90–130 ms: the p99 tail (apps/common/heap.py)
        stopping = {"flag": False}

        def stop(*_: Any) -> None:
            stopping["flag"] = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        delivered = dispatch_forever(should_stop=lambda: stopping["flag"], idle_seconds=options["idle_seconds"])
        self.stdout.write(f"delivered {delivered}")
