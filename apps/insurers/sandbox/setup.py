"""Registering the built-in sandbox insurer (called by `seed_demo` and by tests)."""

from __future__ import annotations

import base64
import secrets

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
