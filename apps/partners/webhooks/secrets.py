"""Webhook signing secrets at rest: sealed with `WEBHOOK_SECRETS_KEY` (ADR 0042, apps/common/secretbox.py).

HMAC signing needs the plaintext, so the secret is encrypted (not hashed), bound to its endpoint (a sealed value
copied onto another endpoint does not open). The plaintext `whsec_…` is returned once, at creation or rotation,
and is otherwise only ever in memory while a delivery is signed.
"""

from __future__ import annotations

import logging

from apps.common.secretbox import keys_for, seal, unseal_any

log = logging.getLogger(__name__)


def _keys() -> list[bytes]:
    """`WEBHOOK_SECRETS_KEY`: one base64 key, or `NEW,OLD,…` while a key is being replaced (ADR 0046)."""
    return keys_for("WEBHOOK_SECRETS_KEY", purpose="webhook-secrets")


def _context(endpoint_id: int) -> str:
    return f"keel:webhook-secret:{endpoint_id}"


def secret_seal(plaintext: str, *, endpoint_id: int) -> str:
    """`whsec_…` → the stored text for endpoint `endpoint_id`, sealed under the newest key."""
    return seal(plaintext.encode(), key=_keys()[0], context=_context(endpoint_id))


def secret_open(stored: str, *, endpoint_id: int) -> str:
    """The stored text → `whsec_…`, opened with whichever configured key sealed it. Raises
    `apps.common.secretbox.SealedValueError` (no configured key opens it, tampered, or another endpoint's value)."""
    return unseal_any(stored, keys=_keys(), context=_context(endpoint_id))[0].decode()


def secrets_reseal(*, batch_size: int = 500) -> dict[str, int]:
    """Re-seal every stored webhook secret that an older key of `WEBHOOK_SECRETS_KEY` opens under the newest
    key, batch by batch (each batch one transaction, rows locked, one audit entry per batch that changed rows).
    Idempotent: a second run re-seals nothing. Returns `{"resealed", "current", "unreadable"}` — an unreadable
    row (no configured key opens it) is left as it is and logged by id only; the plaintext never leaves memory.
    """
    from django.db import transaction

    from apps.audit.services import audit_record
    from apps.common.actors import Actor
    from apps.common.secretbox import SealedValueError
    from apps.partners.contracts import PartnerAuditAction
    from apps.partners.webhooks.models import WebhookSecret

    keys = _keys()
    counts = {"resealed": 0, "current": 0, "unreadable": 0}
    after = 0
    while True:
        with transaction.atomic():
            rows = list(
                WebhookSecret.objects.select_for_update()
                .filter(pk__gt=after)
                .order_by("pk")
                .values_list("pk", "endpoint_id", "secret")[:batch_size]
            )
            if not rows:
                break
            after = rows[-1][0]
            changed: list[int] = []
            for pk, endpoint_id, stored in rows:
                try:
                    plaintext, index = unseal_any(stored, keys=keys, context=_context(endpoint_id))
                except SealedValueError:
                    counts["unreadable"] += 1
                    log.error("webhooks.secret_unreadable", extra={"endpoint_id": endpoint_id, "secret_id": pk})
                    continue
                if index == 0:
                    counts["current"] += 1
                    continue
                resealed = seal(plaintext, key=keys[0], context=_context(endpoint_id))
                WebhookSecret.objects.filter(pk=pk).update(secret=resealed)
                changed.append(pk)
            counts["resealed"] += len(changed)
            if changed:
                audit_record(
                    actor=Actor.system("webhooks.secrets_reseal"),
                    action=PartnerAuditAction.WEBHOOK_SECRETS_RESEALED,
                    object_type="webhook_secret",
                    object_id=f"{changed[0]}-{changed[-1]}",
                    after={"resealed_ids": changed},
                )
    return counts
