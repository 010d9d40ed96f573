"""PAN protection: validation, AES-256-GCM under a versioned key ring, a keyed HMAC blind index, masking.

See docs/adr/0009-pan-protection.md. Configuration (environment variables, read through settings when the
lead has wired them, else straight from the environment):

- ``PAN_ENCRYPTION_KEYS`` — ``"1:<base64 of 32 bytes>,2:<base64 of 32 bytes>"``: every key version that
  may still be needed to decrypt. Old versions stay until ``manage.py rotate_pan_key`` has re-encrypted
  every row under the active one.
- ``PAN_ACTIVE_KEY_VERSION`` — the version new ciphertexts use (default: the highest configured).
- ``PAN_BLIND_INDEX_KEY`` — base64 of 32 bytes, separate from the encryption keys. It is NOT rotated by
  ``rotate_pan_key``: changing it would need every blind index recomputed (decrypt-all), see the ADR.

With nothing configured, DEBUG and test settings derive deterministic development keys from SECRET_KEY;
any other environment refuses to start encrypting (``ImproperlyConfigured``).

This module never logs. Callers record every decrypt/mask in the PII access log (``services.pan_reveal_for``
and friends do that; nothing else should call ``decrypt_pan``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

PAN_RE = re.compile(r"^[A-Z]{5}[0-9]{4}[A-Z]$")
NONCE_BYTES = 12
KEY_BYTES = 32
_AAD_PREFIX = b"keel/loan_application/pan/v1:"
_BLIND_INDEX_PREFIX = b"keel/pan-blind-index/v1:"


class PanDecryptionError(Exception):
    """The ciphertext was tampered with, belongs to another application (wrong associated data), or its key
    version is not in the key ring. The message never contains key material or plaintext."""


def pan_validation_error(value: str) -> str | None:
    """Why `value` is not a PAN, or None. 10 characters: 5 letters, 4 digits (not 0000), 1 letter."""
    if not PAN_RE.fullmatch(value):
        return "Enter a PAN of 5 capital letters, 4 digits and a capital letter (e.g. ABCDE1234F)."
    if value[5:9] == "0000":
        return "The PAN's sequence number 0000 is not issued."
    return None


def mask_pan(pan: str) -> str:
    """`XXXXX` + the last five characters (`XXXXX1234F`)."""
    return "XXXXX" + pan[-5:]


@dataclass(frozen=True, slots=True)
class KeyRing:
    keys: dict[int, bytes]
    active_version: int
    blind_index_key: bytes

    @property
    def active_key(self) -> bytes:
        return self.keys[self.active_version]


def _b64_key(value: str, name: str) -> bytes:
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImproperlyConfigured(f"{name} is not valid base64") from exc
    if len(raw) != KEY_BYTES:
        raise ImproperlyConfigured(f"{name} must decode to {KEY_BYTES} bytes, not {len(raw)}")
    return raw


def _setting(name: str) -> object:
    value = getattr(settings, name, None)
    if value in (None, ""):
        value = os.environ.get(name) or None
    return value


def _dev_fallback_allowed() -> bool:
    module = str(getattr(settings, "SETTINGS_MODULE", "") or os.environ.get("DJANGO_SETTINGS_MODULE", ""))
    return bool(settings.DEBUG) or module.endswith("settings.test")


def _derive(label: str) -> bytes:
    return hashlib.sha256(f"keel-dev-only:{label}:{settings.SECRET_KEY}".encode()).digest()


def _parse_keys(raw: object) -> dict[int, bytes]:
    if isinstance(raw, dict):
        items = [(str(k), str(v)) for k, v in raw.items()]
    else:
        items = []
        for part in str(raw).split(","):
            if not part.strip():
                continue
            version, sep, material = part.partition(":")
            if not sep:
                raise ImproperlyConfigured("PAN_ENCRYPTION_KEYS entries look like '<version>:<base64 key>'")
            items.append((version, material))
    keys: dict[int, bytes] = {}
    for version, material in items:
        try:
            number = int(version)
        except ValueError as exc:
            raise ImproperlyConfigured(f"PAN key version {version!r} is not an integer") from exc
        if number < 1:
            raise ImproperlyConfigured("PAN key versions start at 1")
        keys[number] = _b64_key(material, f"PAN_ENCRYPTION_KEYS[{number}]")
    if not keys:
        raise ImproperlyConfigured("PAN_ENCRYPTION_KEYS is empty")
    return keys


@lru_cache(maxsize=1)
def key_ring() -> KeyRing:
    raw_keys = _setting("PAN_ENCRYPTION_KEYS")
    raw_blind = _setting("PAN_BLIND_INDEX_KEY")
    if (raw_keys is None or raw_blind is None) and not _dev_fallback_allowed():
        raise ImproperlyConfigured(
            "PAN_ENCRYPTION_KEYS and PAN_BLIND_INDEX_KEY must be set (see docs/adr/0009-pan-protection.md)"
        )
    keys = _parse_keys(raw_keys) if raw_keys is not None else {1: _derive("pan-encryption-key-1")}
    blind = _b64_key(str(raw_blind), "PAN_BLIND_INDEX_KEY") if raw_blind is not None else _derive("pan-blind-index-key")
    raw_active = _setting("PAN_ACTIVE_KEY_VERSION")
    active = int(str(raw_active)) if raw_active is not None else max(keys)
    if active not in keys:
        raise ImproperlyConfigured(f"PAN_ACTIVE_KEY_VERSION {active} is not in PAN_ENCRYPTION_KEYS")
    return KeyRing(keys=keys, active_version=active, blind_index_key=blind)


def _reset_key_ring(*, setting: str, **kwargs: object) -> None:
    if setting.startswith("PAN_") or setting in ("SECRET_KEY", "DEBUG"):
        key_ring.cache_clear()


setting_changed.connect(_reset_key_ring)


def _aad(application_id: uuid.UUID) -> bytes:
    return _AAD_PREFIX + application_id.bytes


def encrypt_pan(pan: str, *, application_id: uuid.UUID, ring: KeyRing | None = None) -> tuple[bytes, int]:
    """(nonce ‖ ciphertext ‖ tag, key version) under the active key; a fresh random 96-bit nonce each time."""
    ring = ring or key_ring()
    nonce = os.urandom(NONCE_BYTES)
    sealed = AESGCM(ring.active_key).encrypt(nonce, pan.encode("ascii"), _aad(application_id))
    return nonce + sealed, ring.active_version


def decrypt_pan(
    ciphertext: bytes | memoryview, *, key_version: int, application_id: uuid.UUID, ring: KeyRing | None = None
) -> str:
    """Plaintext PAN. Raises `PanDecryptionError` on tampering, a wrong application id or an unknown key."""
    ring = ring or key_ring()
    key = ring.keys.get(key_version)
    if key is None:
        raise PanDecryptionError(f"PAN key version {key_version} is not configured")
    blob = bytes(ciphertext)
    if len(blob) < NONCE_BYTES + 16:
        raise PanDecryptionError("PAN ciphertext is truncated")
    try:
        plain = AESGCM(key).decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], _aad(application_id))
    except InvalidTag as exc:
        raise PanDecryptionError(
            f"PAN ciphertext of application {application_id} failed authentication (tampered or misplaced)"
        ) from exc
    return plain.decode("ascii")


def blind_index(pan: str, *, ring: KeyRing | None = None) -> str:
    """HMAC-SHA256(blind-index key, PAN) as hex: equal PANs give equal indexes, nothing else is revealed
    to someone without the key (a bare SHA-256 of a PAN is brute-forced in minutes)."""
    ring = ring or key_ring()
    return hmac.new(ring.blind_index_key, _BLIND_INDEX_PREFIX + pan.encode("ascii"), hashlib.sha256).hexdigest()


def generate_key() -> str:
    """A new base64 key for PAN_ENCRYPTION_KEYS / PAN_BLIND_INDEX_KEY."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()
