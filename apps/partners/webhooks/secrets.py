"""Webhook signing secrets at rest: sealed with `WEBHOOK_SECRETS_KEY` (ADR 0042, apps/common/secretbox.py).

HMAC signing needs the plaintext, so the secret is encrypted (not hashed), bound to its endpoint (a sealed value
copied onto another endpoint does not open). The plaintext `whsec_…` is returned once, at creation or rotation,
and is otherwise only ever in memory while a delivery is signed.
"""

from __future__ import annotations

from apps.common.secretbox import key_for, seal, unseal


def _key() -> bytes:
    return key_for("WEBHOOK_SECRETS_KEY", purpose="webhook-secrets")


def _context(endpoint_id: int) -> str:
    return f"keel:webhook-secret:{endpoint_id}"


def secret_seal(plaintext: str, *, endpoint_id: int) -> str:
    """`whsec_…` → the stored text for endpoint `endpoint_id`."""
    return seal(plaintext.encode(), key=_key(), context=_context(endpoint_id))


def secret_open(stored: str, *, endpoint_id: int) -> str:
    """The stored text → `whsec_…`. Raises `apps.common.secretbox.SealedValueError` (wrong key, tampered, or
    another endpoint's value)."""
    return unseal(stored, key=_key(), context=_context(endpoint_id)).decode()
