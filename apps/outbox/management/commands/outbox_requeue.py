from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.outbox.services import outbox_requeue


class Command(BaseCommand):
    help = "Requeue dead outbox rows (fresh attempt budget)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--id", type=int, action="append", dest="ids", help="a dead row's id (repeatable)")
        parser.add_argument("--topic", help="only dead rows of this topic")
        parser.add_argument("--all-dead", action="store_true", help="every dead row")

    def handle(self, *args: Any, **options: Any) -> None:
        if not (options["ids"] or options["topic"] or options["all_dead"]):
            raise CommandError("Say which rows: --id N (repeatable), --topic T or --all-dead.")
        count = outbox_requeue(ids=options["ids"], topic=options["topic"], all_dead=options["all_dead"])
        self.stdout.write(f"Requeued {count} dead row(s).")
