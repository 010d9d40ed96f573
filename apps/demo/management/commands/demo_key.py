"""`manage.py demo_key [--fresh] [--wait-for URL] [--idle]`: the demo partner's API key, random per install.

The key is made with `api_key_create` (random, only its hash stored) the first time, and its plaintext kept in
`var/demo-api-key` (mode 0600) so later `make run`s print the same key; `--fresh` (`make key`) revokes it
and issues a new one. `make run` starts this as its last process with `--wait-for <ready URL> --idle`: the key
is printed once the web process answers /ready and the others have started, so no start-up log buries it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from apps.common.actors import Actor
from apps.partners.models import APIKey, Partner, Scope
from apps.partners.services import api_key_create, api_key_revoke

DEMO_PARTNER = "demo-partner"
KEY_NAME = "demo key"


def key_file() -> Path:
    return Path(settings.BASE_DIR) / "var" / "demo-api-key"


def _stored_valid_key() -> str | None:
    path = key_file()
    if not path.exists():
        return None
    plaintext = path.read_text().strip()
    prefix = plaintext.split(".", 1)[0]
    api_key = APIKey.objects.filter(prefix=prefix, revoked=False).first()
    if api_key is None or not api_key.is_valid(plaintext):
        return None
    return plaintext


def demo_key_issue(*, fresh: bool) -> str:
    """The install's demo key: the stored one while it is valid, otherwise (or with `fresh`) a new random key
    for the demo partner with every scope and every employer; earlier demo keys are revoked."""
    actor = Actor.system("manage.py demo_key")
    if not fresh and (plaintext := _stored_valid_key()):
        return plaintext
    partner = Partner.objects.filter(name=DEMO_PARTNER).first()
    if partner is None:
        raise CommandError("No demo partner: run `manage.py seed_demo` first.")
    with transaction.atomic():
        for prefix in APIKey.objects.filter(partner=partner, name=KEY_NAME, revoked=False).values_list(
            "prefix", flat=True
        ):
            api_key_revoke(prefix=prefix, actor=actor)
        _, plaintext = api_key_create(
            partner=partner, name=KEY_NAME, scopes=list(Scope.values), all_employers=True, actor=actor
        )
    path = key_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(plaintext + "\n")
    return plaintext


def _wait_ready(url: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # not up yet (refused, reset, 503)
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - a local http URL we were given
                if response.status == 200:
                    return True
        time.sleep(0.5)
    return False


class Command(BaseCommand):
    help = "Print the demo API key (random per install); --fresh issues a new one and revokes the old."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--fresh", action="store_true", help="revoke the current demo key and issue a new one")
        parser.add_argument("--wait-for", metavar="URL", help="print only once this URL answers 200 (e.g. /ready)")
        parser.add_argument("--settle", type=float, default=4.0, help="seconds to wait after that (default 4)")
        parser.add_argument("--idle", action="store_true", help="stay running afterwards (a honcho process)")

    def handle(self, *args: Any, **options: Any) -> None:
        plaintext = demo_key_issue(fresh=options["fresh"])
        if options["wait_for"]:
            if not _wait_ready(options["wait_for"], timeout=180):
                self.stderr.write(f"{options['wait_for']} did not answer 200 within 180 s")
            time.sleep(options["settle"])
        port = os.environ.get("KEEL_PORT", "8000")
        self.stdout.write(
            "\n"
            "Keel is up. Demo API key (every scope, every demo employer; `make key` issues a fresh one):\n"
            f"  export KEY={plaintext}\n"
            f'  curl -s -H "Authorization: Api-Key $KEY" http://127.0.0.1:{port}/api/v1/employers\n'
            f"Ops dashboard http://127.0.0.1:{port}/ops/ · API docs http://127.0.0.1:{port}/api/docs/\n"
        )
        self.stdout.write(plaintext)
        sys.stdout.flush()
        if options["idle"]:
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
