from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.audit.models import AuditStream
from apps.audit.sealing import SEAL_MAX_BATCHES, seal_all


class Command(BaseCommand):
    help = "Seal unsealed audit events into their stream's hash chain (the audit.seal beat task does this every 10 s)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--stream", choices=AuditStream.values, help="only this stream")
        parser.add_argument(
            "--full-scan",
            action="store_true",
            help="look below the sealer's floor too: seals events that committed more than "
            "AUDIT_SEAL_SETTLE_SECONDS late. Run only after audit_verify's report on them was investigated.",
        )
        parser.add_argument("--max-batches", type=int, default=SEAL_MAX_BATCHES)

    def handle(self, *args: Any, **options: Any) -> None:
        counts = seal_all(stream=options["stream"], max_batches=options["max_batches"], full_scan=options["full_scan"])
        for stream, count in counts.items():
            self.stdout.write(f"{stream}: sealed {count}")
