from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from apps.audit.services import job_run
from apps.common.actors import Actor
from apps.endorsements.models import Endorsement, EndorsementStatus
from apps.endorsements.services import endorsement_retry


class Command(BaseCommand):
    help = "Send FAILED endorsements through the pipeline again (same insurer idempotency keys)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--id", type=int, action="append", dest="ids", help="endorsement id (repeatable)")
        parser.add_argument("--employer", type=int, help="only this employer's")
        parser.add_argument("--limit", type=int, default=1000)

    def handle(self, *args: Any, **options: Any) -> None:
        qs = Endorsement.objects.filter(status=EndorsementStatus.FAILED).order_by("id")
        if options["ids"]:
            qs = qs.filter(pk__in=options["ids"])
        if options["employer"]:
            qs = qs.filter(employer_id=options["employer"])
        actor = Actor.system("manage.py endorsements_retry_failed")
        with job_run("endorsements_retry_failed", {"limit": options["limit"]}) as run:
            retried = 0
            for endorsement in qs[: options["limit"]]:
                endorsement_retry(endorsement=endorsement, actor=actor)
                retried += 1
            run.counts["retried"] = retried
        self.stdout.write(f"Retried {retried} FAILED endorsement(s).")
