from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from apps.common.actors import Actor
from apps.oauth.services import oauth_key_rotate


class Command(BaseCommand):
    help = (
        "Start signing access tokens with a new ES256 key. The old key stays in the JWKS and keeps verifying "
        "until the tokens it signed expire."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        key = oauth_key_rotate(actor=Actor.system("manage.py oauth_key_rotate"))
        self.stdout.write(
            f"New signing key {key.kid}; the previous one verifies for another "
            f"{settings.OAUTH_ACCESS_TOKEN_TTL_SECONDS} s."
        )
