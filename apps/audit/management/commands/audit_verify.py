from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.models import AuditStream
from apps.audit.services import job_run
from apps.audit.sealing import audit_verify


class Command(BaseCommand):
    help = "Verify the audit hash chains; exits non-zero if any event or seal was changed or removed."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--stream", choices=AuditStream.values)
        parser.add_argument("--grace-seconds", type=int, default=600,
                            help="events younger than this may still be unsealed (default 600)")

    def handle(self, *args: Any, **options: Any) -> None:
        with job_run("audit_verify", {"stream": options["stream"]}) as run:
            report = audit_verify(stream=options["stream"], grace=timedelta(seconds=options["grace_seconds"]))
            run.counts.update({s.stream: s.sealed for s in report.streams})
            run.counts["problems"] = sum(len(s.problems) for s in report.streams)
        for s in report.streams:
            state = "OK" if not s.problems else f"{len(s.problems)} PROBLEM(S)"
            self.stdout.write(f"{s.stream}: {state}; {s.sealed} sealed, {s.unsealed_recent} awaiting a seal; "
                              f"head {s.head_hash}")
            for problem in s.problems:
                self.stdout.write(f"  - {problem}")
        if not report.ok:
            raise CommandError("audit verification failed")
