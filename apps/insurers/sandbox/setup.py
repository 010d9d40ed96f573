"""Registering the built-in sandbox insurer (called by `seed_demo` and by tests)."""

from __future__ import annotations

import base64
import secrets
from urllib.parse import urlsplit

from django.db import transaction

from apps.audit.services import audit_record
from apps.common.actors import Actor
from apps.insurers.models import Insurer, InsurerProtocol
from apps.insurers.sandbox.models import SandboxConfig

SANDBOX_REST_CODE = "sandbox-rest"


def generate_callback_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


@transaction.atomic
def sandbox_register(*, base_url: str) -> list[Insurer]:
    """Create or update the `sandbox-rest` insurer (endpoint under `base_url`, a fresh `whsec_` callback
    secret if it has none) and its sandbox configuration, whose callbacks go back to this deployment.
    Idempotent: running it again changes only what differs (e.g. a new base URL)."""
    base = base_url.rstrip("/")
    actor = Actor.system("sandbox_register")
    insurer, created = Insurer.objects.select_for_update().get_or_create(
        code=SANDBOX_REST_CODE,
        defaults={"name": "Sandbox Insurer (REST)", "protocol": InsurerProtocol.REST},
    )
    before = {"protocol": insurer.protocol, "endpoint": insurer.endpoint, "callback_secret": insurer.callback_secret}
    insurer.protocol = InsurerProtocol.REST
    insurer.endpoint = f"{base}/sandbox/{SANDBOX_REST_CODE}"
    if not insurer.callback_secret:
        insurer.callback_secret = generate_callback_secret()
    after = {"protocol": insurer.protocol, "endpoint": insurer.endpoint, "callback_secret": insurer.callback_secret}
    if created or before != after:
        insurer.save(update_fields=["protocol", "endpoint", "callback_secret"])
        audit_record(
            actor=actor,
            action="insurer.sandbox_registered",
            object_type="insurer",
            object_id=insurer.pk,
            before=None if created else before,
            after=after,
        )
    config, _ = SandboxConfig.objects.get_or_create(code=SANDBOX_REST_CODE)
    config.callback_url = f"{base}/api/v1/insurer-callbacks/{SANDBOX_REST_CODE}"
    config.callback_secret = insurer.callback_secret
    config.save(update_fields=["callback_url", "callback_secret", "updated_at"])
    return [insurer]


SANDBOX_CODE_PREFIX = "sandbox-"
_SANDBOX_PATHS = ("/sandbox/", "/api/v1/insurer-callbacks/")


def _rebased(url: str, base: str) -> str:
    """`url` moved onto `base` when it is an absolute address of this app's sandbox routes, else unchanged."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.path.startswith(_SANDBOX_PATHS):
        return url
    query = f"?{parts.query}" if parts.query else ""
    return f"{base}{parts.path}{query}"


@transaction.atomic
def sandbox_addresses_repair(*, base_url: str) -> list[tuple[str, str, str]]:
    """Point every built-in sandbox insurer (code `sandbox-…`, endpoint on this app's `/sandbox/` routes) and
    every sandbox callback URL at `base_url` — e.g. after `make run KEEL_PORT=8130` or a `make demo` that
    registered a temporary port (issue 8, kind 14; ADR 0019). Returns `(code, before, after)` per change,
    each audited as `insurer.sandbox_address_repaired`. Addresses elsewhere (a real WSDL, an SFTP folder)
    are left alone."""
    base = base_url.rstrip("/")
    actor = Actor.system("sandbox_addresses_repair")
    changes: list[tuple[str, str, str]] = []
    for insurer in Insurer.objects.select_for_update().filter(code__startswith=SANDBOX_CODE_PREFIX).order_by("code"):
        after = _rebased(insurer.endpoint, base)
        if after != insurer.endpoint:
            changes.append((insurer.code, insurer.endpoint, after))
            audit_record(
                actor=actor,
                action="insurer.sandbox_address_repaired",
                object_type="insurer",
                object_id=insurer.pk,
                before={"endpoint": insurer.endpoint},
                after={"endpoint": after},
            )
            insurer.endpoint = after
            insurer.save(update_fields=["endpoint"])
    for config in SandboxConfig.objects.select_for_update().order_by("code"):
        after = _rebased(config.callback_url, base)
        if after != config.callback_url:
            changes.append((f"{config.code} callbacks", config.callback_url, after))
            config.callback_url = after
            config.save(update_fields=["callback_url", "updated_at"])
    return changes
