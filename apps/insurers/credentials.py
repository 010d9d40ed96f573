"""Insurer credentials, encrypted at rest (SPEC §5, ADR 0029).

`Insurer.credentials` holds `v1:` + base64(96-bit nonce ‖ AES-256-GCM ciphertext ‖ tag) of a JSON object
(e.g. `{"sftp_password": "…", "sftp_host_key": "ssh-ed25519 AAAA…", "api_key": "…"}`), with the insurer's
code as associated data (a value copied onto another insurer does not decrypt). The key is
`INSURER_CREDENTIALS_KEY` (base64 of 32 bytes); with none set, DEBUG and test settings derive a fixed
development key from SECRET_KEY and any other environment raises `ImproperlyConfigured` on first use.
Plaintext is never logged, audited or returned by the API; the admin shows only `masked_credentials`.
"""

from __future__ import annotations

import json
from typing import Any

from apps.common.secretbox import SealedValueError, is_sealed, key_for, seal, unseal
from apps.insurers.contracts import InsurerConfigurationError


class CredentialsError(InsurerConfigurationError):
    """Stored credentials cannot be read (wrong key, tampered, not encrypted by Keel)."""


def _key() -> bytes:
    return key_for("INSURER_CREDENTIALS_KEY", purpose="insurer-credentials")


def _context(insurer_code: str) -> str:
    return f"keel:insurer-credentials:{insurer_code}"


def encrypt_credentials(values: dict[str, Any], *, insurer_code: str) -> str:
    """A JSON object of credentials → the stored text (empty dict → empty string)."""
    if not values:
        return ""
    return seal(json.dumps(values, sort_keys=True).encode(), key=_key(), context=_context(insurer_code))


def decrypt_credentials(stored: str, *, insurer_code: str) -> dict[str, Any]:
    """The stored text → the credentials object ({} when none). Raises `CredentialsError` (a configuration
    error: the endorsement fails with class `configuration`), never with key or plaintext in the message."""
    if not stored:
        return {}
    if not is_sealed(stored):
        raise CredentialsError(
            f"Insurer {insurer_code!r}: stored credentials are not encrypted by Keel; set them again"
        )
    try:
        values = json.loads(unseal(stored, key=_key(), context=_context(insurer_code)))
    except (SealedValueError, ValueError) as exc:
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
