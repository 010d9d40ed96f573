from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.common.actors import Actor
from apps.oauth.models import OAuthClient
from apps.oauth.services import oauth_client_revoke


class Command(BaseCommand):
    help = "Revoke an OAuth client: every token it holds is refused from its next request."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("client_id")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            actor = Actor.system("manage.py oauth_client_revoke")
            client = oauth_client_revoke(client_id=options["client_id"], actor=actor)
        except OAuthClient.DoesNotExist:
            raise CommandError(f"No OAuth client {options['client_id']!r}.")
        self.stdout.write(f"Revoked {client.client_id} at {client.revoked_at:%Y-%m-%dT%H:%M:%S%z}.")
