"""Insurer callback signing secrets, sealed at rest (ADR 0044, same secret box as ADR 0029/0042).

Two columns hold an insurer's `whsec_…` Standard Webhooks secret: `Insurer.callback_secret` (Keel verifies the
insurer's callbacks with it) and `SandboxConfig.callback_secret` (the built-in sandbox insurer signs its
callbacks with it). Both store `v1:` + base64(nonce ‖ AES-256-GCM ciphertext ‖ tag) under the key
`INSURER_CALLBACK_SECRETS_KEY` (base64 of 32 bytes; DEBUG and test settings derive a development key from
SECRET_KEY, any other environment raises `ImproperlyConfigured` on first use). The associated data names the
column and the insurer code, so a value copied onto another insurer (or from the sandbox onto the insurer)
does not open. HMAC needs the plaintext, so it is encrypted, not hashed; it is opened in memory only to verify
or sign, and is never logged, audited, returned by the API or shown in the admin (`callback_secret_mask`).
"""

from __future__ import annotations

import base64
import secrets
from typing import Literal

from apps.common.secretbox import SealedValueError, is_sealed, key_for, seal, unseal

Owner = Literal["insurer", "sandbox"]
PREFIX = "whsec_"
MASK = PREFIX + "••••••••"


class CallbackSecretError(ValueError):
    """A stored callback secret does not open (not sealed by Keel, wrong key, tampered or another row's).
    The message names the insurer only, never the key or any part of the secret."""


def _key() -> bytes:
    return key_for("INSURER_CALLBACK_SECRETS_KEY", purpose="insurer-callback-secrets")


def _context(insurer_code: str, owner: Owner) -> str:
    return f"keel:{owner}-callback-secret:{insurer_code}"


def callback_secret_generate() -> str:
    """A fresh Standard Webhooks secret: `whsec_` + base64 of 32 random bytes (plaintext, 50 characters)."""
    return PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def callback_secret_seal(plaintext: str, *, insurer_code: str, owner: Owner = "insurer") -> str:
    """The stored form of `plaintext` for the `owner` column of insurer `insurer_code` ("" stays "")."""
    if not plaintext:
        return ""
    return seal(plaintext.encode(), key=_key(), context=_context(insurer_code, owner))


def callback_secret_open(stored: str, *, insurer_code: str, owner: Owner = "insurer") -> str:
    """The plaintext `whsec_…` of a stored value ("" when none is set). Raises `CallbackSecretError` when the
    value is not sealed by Keel or does not open with this key and context."""
    if not stored:
        return ""
    if not is_sealed(stored):
        raise CallbackSecretError(f"Insurer {insurer_code!r}: the stored callback secret is not sealed; set it again")
    try:
        return unseal(stored, key=_key(), context=_context(insurer_code, owner)).decode()
    except (SealedValueError, UnicodeDecodeError) as exc:
        raise CallbackSecretError(
            f"Insurer {insurer_code!r}: the stored callback secret cannot be opened (wrong key or tampered)"
        ) from exc


def callback_secret_mask(stored: str, *, insurer_code: str, owner: Owner = "insurer") -> str:
    """What operators see: `whsec_••••••••` when a secret is set and opens, "—" when none is set, else the
    reason it cannot be opened. Never any character of the secret beyond its public prefix."""
    if not stored:
        return "—"
    try:
        callback_secret_open(stored, insurer_code=insurer_code, owner=owner)
    except CallbackSecretError as exc:
        return str(exc)
    return MASK
