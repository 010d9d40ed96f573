from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.common.heap import heap_freeze
from apps.common.metrics import start_metrics_server_from_env
from apps.outbox.relay import relay_forever, relay_until_empty


class Command(BaseCommand):
    help = (
        "Run a relay in the foreground: woken by each commit that wrote outbox rows (PostgreSQL LISTEN/NOTIFY), "
        "else every --idle-seconds. Optional beside the Celery relay (nudge + beat); SIGTERM/Ctrl-C stop it."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="relay until nothing is due, then exit")
        parser.add_argument("--batch-size", type=int, help="rows per claim (default OUTBOX['BATCH_SIZE'])")
        parser.add_argument("--idle-seconds", type=float, default=1.0, help="longest wait between passes")
        parser.add_argument(
            "--linger-ms",
            type=float,
            default=0.0,
            help="after a commit wakes it, wait this long to batch commits (default 0: every hop would wait, ADR 0060)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["once"]:
            published = relay_until_empty(batch_size=options["batch_size"], max_seconds=3600.0)
            self.stdout.write(f"Published {published} message(s).")
            return
        # Under docker-compose the relay is its own scrape target (KEEL_METRICS_PORT; docs/ops/).
        start_metrics_server_from_env()
        heap_freeze()  # the loaded app out of the collector: no full collection walks it mid-hop (ADR 0013)
        stopping = False

        def stop(signum: int, frame: FrameType | None) -> None:
            nonlocal stopping
            stopping = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        published = relay_forever(
            batch_size=options["batch_size"],
            idle_seconds=options["idle_seconds"],
            linger_seconds=options["linger_ms"] / 1000,
            should_stop=lambda: stopping,
        )
        self.stdout.write(f"Published {published} message(s).")
