"""Insurer credentials, encrypted at rest (SPEC §5, ADR 0029).

`Insurer.credentials` holds `v1:` + base64(96-bit nonce ‖ AES-256-GCM ciphertext ‖ tag) of a JSON object
(e.g. `{"sftp_password": "…", "sftp_host_key": "ssh-ed25519 AAAA…", "api_key": "…"}`), with the insurer's
code as associated data (a value copied onto another insurer does not decrypt). The key is
`INSURER_CREDENTIALS_KEY` (base64 of 32 bytes); with none set, DEBUG and test settings derive a fixed
development key from SECRET_KEY and any other environment raises `ImproperlyConfigured` on first use.
Plaintext is never logged, audited or returned by the API; the admin shows only `masked_credentials`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from apps.insurers.contracts import InsurerConfigurationError

PREFIX = "v1:"
NONCE_BYTES = 12


class CredentialsError(InsurerConfigurationError):
    """Stored credentials cannot be read (wrong key, tampered, not encrypted by Keel)."""


def _key() -> bytes:
    configured = str(getattr(settings, "INSURER_CREDENTIALS_KEY", "") or "")
    if configured:
        try:
            raw = base64.b64decode(configured, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ImproperlyConfigured("INSURER_CREDENTIALS_KEY is not valid base64") from exc
        if len(raw) != 32:
            raise ImproperlyConfigured(f"INSURER_CREDENTIALS_KEY must decode to 32 bytes, not {len(raw)}")
        return raw
    module = str(getattr(settings, "SETTINGS_MODULE", "") or os.environ.get("DJANGO_SETTINGS_MODULE", ""))
    if settings.DEBUG or module.endswith("settings.test"):
        return hashlib.sha256(f"keel-dev-only:insurer-credentials:{settings.SECRET_KEY}".encode()).digest()
    raise ImproperlyConfigured("INSURER_CREDENTIALS_KEY is not set (base64 of 32 random bytes)")


def _aad(insurer_code: str) -> bytes:
    return f"keel:insurer-credentials:{insurer_code}".encode()


def encrypt_credentials(values: dict[str, Any], *, insurer_code: str) -> str:
    """A JSON object of credentials → the stored text (empty dict → empty string)."""
    if not values:
        return ""
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(_key()).encrypt(nonce, json.dumps(values, sort_keys=True).encode(), _aad(insurer_code))
    return PREFIX + base64.b64encode(nonce + sealed).decode()


def decrypt_credentials(stored: str, *, insurer_code: str) -> dict[str, Any]:
    """The stored text → the credentials object ({} when none). Raises `CredentialsError` (a configuration
    error: the endorsement fails with class `configuration`), never with key or plaintext in the message."""
    if not stored:
        return {}
    if not stored.startswith(PREFIX):
        raise CredentialsError(
            f"Insurer {insurer_code!r}: stored credentials are not encrypted by Keel; set them again"
        )
    try:
        blob = base64.b64decode(stored[len(PREFIX) :], validate=True)
        plain = AESGCM(_key()).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _aad(insurer_code))
        values = json.loads(plain)
    except (binascii.Error, ValueError, InvalidTag) as exc:
        raise CredentialsError(
            f"Insurer {insurer_code!r}: stored credentials cannot be decrypted (wrong key or tampered)"
        ) from exc
    if not isinstance(values, dict):
        raise CredentialsError(f"Insurer {insurer_code!r}: stored credentials are not an object")
    return values


def mask(values: dict[str, Any]) -> dict[str, str]:
    """Names with masked values for operators: `{"sftp_password": "••••••(12)"}`; host keys keep their type."""
    masked: dict[str, str] = {}
    for name, value in sorted(values.items()):
        text = str(value)
        masked[name] = f"{text.split(' ', 1)[0]} ••••" if name.endswith("host_key") else f"•••• ({len(text)} chars)"
    return masked
