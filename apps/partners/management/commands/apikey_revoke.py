from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.common.actors import Actor
from apps.partners.models import APIKey
from apps.partners.services import api_key_revoke


class Command(BaseCommand):
    help = "Revoke an API key by its prefix (the part before the dot). Revocation cannot be undone."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("prefix")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            api_key = api_key_revoke(prefix=options["prefix"], actor=Actor.system("manage.py apikey_revoke"))
        except APIKey.DoesNotExist:
            raise CommandError(f"No API key with prefix {options['prefix']!r}.")
        self.stdout.write(f"Revoked API key {api_key.prefix} (partner {api_key.partner.name!r}).")
