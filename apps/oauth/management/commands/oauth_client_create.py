from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from apps.common.actors import Actor
from apps.common.errors import DomainValidationError
from apps.oauth.services import oauth_client_create
from apps.partners.contracts import Scope
from apps.partners.models import Partner
from apps.partners.services import partner_create


class Command(BaseCommand):
    help = (
        "Create an OAuth client (client credentials) for a partner. The client id and secret are printed once; "
        "the secret alone on the last line."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--partner", required=True, help="partner name (created if it does not exist)")
        parser.add_argument("--scope", action="append", required=True, choices=Scope.values, dest="scopes")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--employer", action="append", type=int, dest="employers", help="employer id")
        target.add_argument("--all-employers", action="store_true", help="act for all the partner's employers")
        parser.add_argument("--name", default="", help="label shown in the admin")

    def handle(self, *args: Any, **options: Any) -> None:
        actor = Actor.system("manage.py oauth_client_create")
        created = False
        try:
            # One transaction: a partner created here does not outlive a client that could not be created.
            with transaction.atomic():
                partner = Partner.objects.filter(name=options["partner"]).first()
                if partner is None:
                    partner, created = partner_create(name=options["partner"], actor=actor), True
                client, secret = oauth_client_create(
                    partner_id=partner.pk,
                    partner_name=partner.name,
                    name=options["name"],
                    scopes=options["scopes"],
                    employer_ids=options["employers"] or (),
                    all_employers=options["all_employers"],
                    actor=actor,
                )
        except DomainValidationError as exc:
            raise CommandError("; ".join(f"{k}: {' '.join(v)}" for k, v in exc.errors.items()))
        if created:
            self.stdout.write(f"Created partner {partner.name!r} (id {partner.pk}).")
        target = "all employers" if client.all_employers else f"employers {options['employers']}"
        self.stdout.write(f"OAuth client for partner {partner.name!r}: scopes {', '.join(client.scopes)}; {target}.")
        self.stdout.write(f"client_id: {client.client_id}")
        self.stdout.write("Store the secret now; it is not shown again:")
        self.stdout.write(secret)
