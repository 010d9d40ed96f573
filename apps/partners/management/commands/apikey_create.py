from __future__ import annotations

from datetime import datetime
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.utils import timezone

from apps.common.actors import Actor
from apps.common.errors import DomainValidationError
from apps.partners.models import Partner, Scope
from apps.partners.services import api_key_create, partner_create


class Command(BaseCommand):
    help = "Create a partner API key. The key is printed once, alone on the last line of the output."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--partner", required=True, help="partner name (created if it does not exist)")
        parser.add_argument("--scope", action="append", required=True, choices=Scope.values, dest="scopes")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--employer", action="append", type=int, dest="employers", help="employer id")
        target.add_argument("--all-employers", action="store_true", help="act for all the partner's employers")
        parser.add_argument("--name", default="", help="label shown in the admin")
        parser.add_argument("--expires", help="expiry, ISO 8601 (e.g. 2027-01-31T00:00:00+05:30)")

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.system("manage.py apikey_create")
        expires_at = None
        if options["expires"]:
            try:
                expires_at = datetime.fromisoformat(options["expires"])
            except ValueError:
                raise CommandError("--expires must be an ISO 8601 date-time")
            if timezone.is_naive(expires_at):
                expires_at = timezone.make_aware(expires_at)
        created = False
        try:
            # One transaction: a partner created here does not outlive a key that could not be created.
            with transaction.atomic():
                partner = Partner.objects.filter(name=options["partner"]).first()
                if partner is None:
                    partner, created = partner_create(name=options["partner"], actor=actor), True
                api_key, plaintext = api_key_create(
                    partner=partner,
                    name=options["name"] or f"{partner.name} key",
                    scopes=options["scopes"],
                    employer_ids=options["employers"] or (),
                    all_employers=options["all_employers"],
                    expires_at=expires_at,
                    actor=actor,
                )
        except DomainValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.errors.items()))
        if created:
            self.stdout.write(f"Created partner {partner.name!r} (id {partner.pk}).")
        target = "all employers" if api_key.all_employers else f"employers {options['employers']}"
        self.stdout.write(
            f"API key {api_key.prefix} for partner {partner.name!r}: scopes {', '.join(api_key.scopes)}; {target}."
        )
        self.stdout.write("Store it now; it is not shown again:")
        self.stdout.write(plaintext)
