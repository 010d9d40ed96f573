from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.common.actors import Actor
from apps.common.ids import BIGINT_MAX
from apps.common.money import MoneyError, format_minor, to_minor
from apps.common.text import control_character_error
from apps.ledger.services import LedgerError, topup_post


class Command(BaseCommand):
    help = "Operator top-up of an employer's endorsement account (idempotent by --reference)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--employer", type=int, required=True)
        parser.add_argument("--amount", required=True, help="rupees with at most two decimals, e.g. 25000.00")
        parser.add_argument("--reference", required=True, help="bank reference; repeating it changes nothing")

    def handle(self, *args: Any, **options: Any) -> None:
        # The same input rules as the API (ADRs 0014, 0015): a clean message, never a traceback.
        if not 1 <= options["employer"] <= BIGINT_MAX:
            raise CommandError(f"--employer must be an id from 1 to {BIGINT_MAX}.")
        if reason := control_character_error(options["reference"]):
            raise CommandError(f"--reference: {reason}")
        try:
            txn = topup_post(
                employer_id=options["employer"],
                amount=to_minor(options["amount"]),
                reference=options["reference"],
                actor=Actor.system("manage.py ledger_topup"),
            )
        except (MoneyError, LedgerError) as exc:
            raise CommandError(str(exc))
        self.stdout.write(f"top-up {txn.reference}: INR {format_minor(txn.amount)} (transaction {txn.pk})")
