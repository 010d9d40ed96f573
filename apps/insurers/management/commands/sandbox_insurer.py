from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.insurers.sandbox.models import SandboxMode
from apps.insurers.sandbox.roster import DRIFT_HELP, sandbox_drift_apply, sandbox_roster_control
from apps.insurers.sandbox.service import sandbox_configure


class Command(BaseCommand):
    help = (
        "Configure the sandbox insurer's behaviour (latency, failure rate, sync or callback answers), make its "
        "roster drift and its roster API throttle (reconciliation, issue 12)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--code", default="sandbox-rest")
        parser.add_argument("--latency-ms", type=int)
        parser.add_argument("--failure-rate", type=float)
        parser.add_argument("--mode", choices=SandboxMode.values)
        parser.add_argument("--callback-url")
        parser.add_argument("--reset-rules", action="store_true", help="Restore the default rejection rules.")
        parser.add_argument("--policy", help="policy number the member drifts apply to")
        parser.add_argument("--drift", action="append", default=[], metavar="SPEC", help=f"repeatable: {DRIFT_HELP}")
        parser.add_argument(
            "--throttle-every", type=int, help="answer 429 once for every Nth roster page (0: never; sets the controls)"
        )
        parser.add_argument("--retry-after", type=int, default=1, help="seconds a throttled page asks to wait")
        parser.add_argument("--retry-after-http-date", action="store_true", help="send Retry-After as an HTTP date")
        parser.add_argument("--roster-failures", type=int, default=0, help="the next N roster requests answer 503")

    def handle(self, *args: Any, **options: Any) -> None:
        code = options["code"]
        try:
            config = sandbox_configure(
                code=code,
                latency_ms=options["latency_ms"],
                failure_rate=options["failure_rate"],
                mode=options["mode"],
                callback_url=options["callback_url"],
                reset_rules=options["reset_rules"],
            )
            for spec in options["drift"]:
                if not options["policy"] and not spec.startswith(("charge_amount:", "drop_charge:")):
                    raise CommandError("--drift on a member needs --policy NUMBER")
                self.stdout.write(
                    f"{code}: " + sandbox_drift_apply(code=code, policy_number=options["policy"] or "", spec=spec)
                )
            if options["throttle_every"] is not None or options["roster_failures"]:
                control = sandbox_roster_control(
                    code=code,
                    throttle_every=options["throttle_every"] or 0,
                    retry_after_seconds=options["retry_after"],
                    retry_after_http_date=options["retry_after_http_date"],
                    failures=options["roster_failures"],
                )
                self.stdout.write(
                    f"{code}: roster throttle_every={control.throttle_every} retry_after={control.retry_after_seconds}"
                    f"{' (HTTP date)' if control.retry_after_http_date else ''} failures={control.failures_remaining}"
                )
        except ValueError as exc:
            raise CommandError(str(exc)) from exc
        self.stdout.write(
            f"{config.code}: latency_ms={config.latency_ms} failure_rate={config.failure_rate} mode={config.mode} "
            f"callback_url={config.callback_url or '-'} rules={len(config.rejection_rules or [])}"
        )
