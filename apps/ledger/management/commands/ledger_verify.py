from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.ledger.selectors import ledger_verify


class Command(BaseCommand):
    help = (
        "Check the ledger: cached balances equal the sums of entries and open holds, every transaction "
        "balances, no hold resolved twice, no employer account below zero. Exits non-zero on any difference."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        report = ledger_verify()
        for line in report.lines():
            self.stdout.write(line)
        if not report.ok:
            raise CommandError(f"ledger verification found {len(report.problems)} problem(s)")
