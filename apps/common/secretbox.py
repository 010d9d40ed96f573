"""Secrets Keel must read back (insurer credentials, webhook signing secrets), encrypted at rest (ADR 0029, 0042).

Stored form: `v1:` + base64(96-bit random nonce ‖ AES-256-GCM ciphertext ‖ 128-bit tag), with associated data
naming what the value belongs to (a value copied onto another row does not decrypt). Each kind of secret has its
own key setting (base64 of 32 bytes); with none set, DEBUG and test settings derive a fixed development key from
SECRET_KEY and the key's purpose, and any other environment raises `ImproperlyConfigured` on first use.
Plaintext is never logged; errors never carry a key or a plaintext.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

PREFIX = "v1:"
NONCE_BYTES = 12


class SealedValueError(ValueError):
    """A stored value is not Keel's sealed form, or does not open with this key and context (wrong key,
    tampered, or copied from another row)."""


def _decode_key(setting: str, configured: str) -> bytes:
    try:
        raw = base64.b64decode(configured, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImproperlyConfigured(f"{setting} is not valid base64") from exc
    if len(raw) != 32:
        raise ImproperlyConfigured(f"{setting} must decode to 32 bytes, not {len(raw)}")
    return raw


def key_for(setting: str, *, purpose: str) -> bytes:
    """The 32-byte key in `settings.<setting>` (base64). Unset: a development key derived from SECRET_KEY and
    `purpose` under DEBUG or the test settings; otherwise `ImproperlyConfigured` naming the setting."""
    configured = str(getattr(settings, setting, "") or "")
    if configured:
        return _decode_key(setting, configured)
    return _development_key(setting, purpose=purpose)


def keys_for(setting: str, *, purpose: str) -> list[bytes]:
    """The keys of a rotatable setting, **newest first**: `settings.<setting>` holds one base64 key or several
    separated by commas (`NEW,OLD,…`). The first seals; every one opens (`unseal_any`), so a key can be
    replaced without downtime: prepend the new key, re-seal the rows, then drop the old one. Unset: the
    development key as for `key_for`. Raises `ImproperlyConfigured` naming the setting (and the entry)."""
    configured = str(getattr(settings, setting, "") or "")
    entries = [entry.strip() for entry in configured.split(",") if entry.strip()]
    if not entries:
        return [_development_key(setting, purpose=purpose)]
    return [
        _decode_key(setting if len(entries) == 1 else f"{setting} (entry {n})", entry)
        for n, entry in enumerate(entries, start=1)
    ]


def _development_key(setting: str, *, purpose: str) -> bytes:
    module = str(getattr(settings, "SETTINGS_MODULE", "") or os.environ.get("DJANGO_SETTINGS_MODULE", ""))
    if settings.DEBUG or module.endswith("settings.test"):
        return hashlib.sha256(f"keel-dev-only:{purpose}:{settings.SECRET_KEY}".encode()).digest()
    raise ImproperlyConfigured(f"{setting} is not set (base64 of 32 random bytes)")


def seal(plaintext: bytes, *, key: bytes, context: str) -> str:
    """Encrypt `plaintext` for storage; `context` (e.g. "keel:webhook-secret:42") must be given again to open."""
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(key).encrypt(nonce, plaintext, context.encode())
    return PREFIX + base64.b64encode(nonce + sealed).decode()


def is_sealed(stored: str) -> bool:
    return stored.startswith(PREFIX)


def unseal(stored: str, *, key: bytes, context: str) -> bytes:
    """The plaintext of a value `seal` produced with the same key and context. Raises `SealedValueError`."""
    if not is_sealed(stored):
        raise SealedValueError("the stored value is not encrypted by Keel")
    try:
        blob = base64.b64decode(stored[len(PREFIX) :], validate=True)
        return AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], context.encode())
    except (binascii.Error, ValueError, InvalidTag) as exc:
        raise SealedValueError("the stored value cannot be decrypted (wrong key, tampered or another row's)") from exc


def unseal_any(stored: str, *, keys: list[bytes], context: str) -> tuple[bytes, int]:
    """`unseal` with each of `keys` in turn (newest first); returns the plaintext and the index of the key
    that opened it (0 = the newest: nothing to re-seal). Raises `SealedValueError` when none opens it."""
    for index, key in enumerate(keys):
        try:
            return unseal(stored, key=key, context=context), index
        except SealedValueError:
            if index == len(keys) - 1:
                raise
    raise SealedValueError("no key to open the stored value with")
