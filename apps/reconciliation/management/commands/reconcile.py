from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.common.actors import Actor
from apps.employers.selectors import policy_exists
from apps.insurers.selectors import insurer_by_code
from apps.reconciliation.contracts import RunOverlapError
from apps.reconciliation.runner import reconciliation_execute
from apps.reconciliation.selectors import scope_employer_ids
from apps.reconciliation.services import reconciliation_start
from apps.reconciliation.sources import RosterUnsupportedError, roster_source_for


class Command(BaseCommand):
    help = (
        "Start a reconciliation run of an insurer's roster and charges (SPEC §8): every employer with a policy "
        "there, or one employer / policy. Queued for a worker, or run here with --wait (prints progress and summary)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--insurer", required=True, help="insurer code, e.g. sandbox-rest")
        parser.add_argument("--employer", type=int)
        parser.add_argument("--policy", type=int, help="needs --employer")
        parser.add_argument("--wait", action="store_true", help="run in this process and print the summary")

    def handle(self, *args: Any, **options: Any) -> None:
        insurer = insurer_by_code(options["insurer"])
        if insurer is None:
            raise CommandError(f"no insurer with code {options['insurer']!r}")
        try:
            roster_source_for(insurer)
        except RosterUnsupportedError as exc:
            raise CommandError(str(exc)) from exc
        employer_id, policy_id = options["employer"], options["policy"]
        if policy_id is not None and (
            employer_id is None
            or not policy_exists(policy_id=policy_id, employer_id=employer_id, insurer_id=insurer.pk)
        ):
            raise CommandError("--policy must be a policy of --employer at this insurer")
        employer_ids = scope_employer_ids(insurer_id=insurer.pk, employer_id=employer_id)
        if not employer_ids:
            if employer_id is not None:
                raise CommandError(f"employer {employer_id} has no policy at {insurer.code}")
            raise CommandError(f"no employer has a policy at {insurer.code}")
        try:
            run = reconciliation_start(
                insurer_id=insurer.pk,
                employer_ids=employer_ids,
                employer_id=employer_id,
                policy_id=policy_id,
                partner_id=None,
                actor=Actor.system("manage.py reconcile"),
                queue=not options["wait"],
            )
        except RunOverlapError as exc:
            raise CommandError(f"reconciliation run {exc.running_run_id} is in progress for this scope") from exc
        if not options["wait"]:
            self.stdout.write(f"run {run.pk} queued")
            return
        self.stdout.write(f"run {run.pk} started")
        pages = 0

        def progress(policy_number: str, seen: int) -> None:
            nonlocal pages
            pages += 1
            self.stdout.write(f"  page {pages}: policy {policy_number}, {seen} member(s) pulled")

        done = reconciliation_execute(run_id=run.pk, on_page=progress)
        self.stdout.write(f"run {done.pk} {done.status}" + (f": {done.error}" if done.error else ""))
        for name, value in sorted(done.summary.items()):
            self.stdout.write(f"  {name}: {value}")
        if done.status != "COMPLETED":
            raise CommandError(f"run {done.pk} ended {done.status}")
