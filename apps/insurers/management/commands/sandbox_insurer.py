from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.insurers.sandbox.models import SandboxMode
from apps.insurers.sandbox.service import sandbox_configure


class Command(BaseCommand):
    help = "Configure the sandbox insurer's behaviour (latency, failure rate, sync or callback answers)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--code", default="sandbox-rest")
        parser.add_argument("--latency-ms", type=int)
        parser.add_argument("--failure-rate", type=float)
        parser.add_argument("--mode", choices=SandboxMode.values)
        parser.add_argument("--callback-url")
        parser.add_argument("--reset-rules", action="store_true", help="Restore the default rejection rules.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            config = sandbox_configure(
                code=options["code"],
                latency_ms=options["latency_ms"],
                failure_rate=options["failure_rate"],
                mode=options["mode"],
                callback_url=options["callback_url"],
                reset_rules=options["reset_rules"],
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"{config.code}: latency_ms={config.latency_ms} failure_rate={config.failure_rate} mode={config.mode} "
            f"callback_url={config.callback_url or '-'} rules={len(config.rejection_rules or [])}"
        )
