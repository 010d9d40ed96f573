from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.models import AuditStream
from apps.audit.sealing import DEFAULT_GRACE, audit_verify
from apps.audit.services import job_run


def _expected_head(value: str) -> tuple[str, int, str]:
    try:
        stream, seq, digest = value.split(":")
        if stream not in AuditStream.values or len(digest) != 64:
            raise ValueError(value)
        return stream, int(seq), digest
    except ValueError:
        raise CommandError(f"--expect-head takes STREAM:SEQ:HASH as printed by audit_verify, not {value!r}")


class Command(BaseCommand):
    help = (
        "Verify the audit hash chains: reports modified or removed events, broken chains and events left "
        "unsealed past the grace period. Seals nothing. Exits non-zero on any problem."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--stream", choices=AuditStream.values, help="only this stream")
        parser.add_argument(
            "--grace-seconds",
            type=int,
            default=int(DEFAULT_GRACE.total_seconds()),
            help="events younger than this may still be unsealed (default %(default)s)",
        )
        parser.add_argument(
            "--expect-head",
            action="append",
            default=[],
            metavar="STREAM:SEQ:HASH",
            help="a head printed by an earlier run and kept outside the database; the chain must still contain "
            "it unchanged (repeatable, one per stream)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        heads = {stream: (seq, digest) for stream, seq, digest in map(_expected_head, options["expect_head"])}
        with job_run("audit.verify", {"stream": options["stream"], "grace_seconds": options["grace_seconds"]}) as run:
            report = audit_verify(
                options["stream"], grace=timedelta(seconds=options["grace_seconds"]), expected_heads=heads
            )
            run.counts.update({s.stream: s.sealed for s in report.streams})
            run.counts["problems"] = sum(s.problem_count for s in report.streams)
            for s in report.streams:
                state = "OK" if s.ok else f"{s.problem_count} PROBLEM(S)"
                self.stdout.write(
                    f"{s.stream}: {state}; {s.sealed} sealed, {s.unsealed_recent} awaiting a seal; "
                    f"head {s.stream}:{s.head_seq}:{s.head_hash}"
                )
                for problem in s.problems:
                    self.stdout.write(f"  - [{problem.kind}] {problem}")
                if s.problem_count > len(s.problems):
                    self.stdout.write(f"  - … and {s.problem_count - len(s.problems)} more")
            if not report.ok:
                # Raised inside job_run so that the job stream records the run as failed.
                raise CommandError(
                    "audit verification failed: "
                    + ", ".join(f"{s.stream} ({s.problem_count})" for s in report.streams if not s.ok)
                )
