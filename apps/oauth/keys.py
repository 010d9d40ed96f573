"""The ES256 keys that sign access tokens: generation, the current signer, the published set (JWKS).

Private keys are stored sealed (ADR 0042's secret box, key setting `OAUTH_SIGNING_KEYS_KEY`); public keys are
cached per process by `kid` (a key never changes once written, so the cache needs no invalidation).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from jwt.algorithms import ECAlgorithm

from apps.common.secretbox import key_for, seal, unseal
from apps.oauth.contracts import SIGNING_ALGORITHM
from apps.oauth.models import SigningKey

_public_keys: dict[str, ec.EllipticCurvePublicKey] = {}
_public_keys_lock = threading.Lock()


@dataclass(frozen=True, slots=True)
class Signer:
    kid: str
    private_key: ec.EllipticCurvePrivateKey


def _box_key() -> bytes:
    return key_for("OAUTH_SIGNING_KEYS_KEY", purpose="oauth-signing-keys")


def _context(kid: str) -> str:
    return f"keel:oauth-signing-key:{kid}"


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url without padding) of an EC public key: the `kid`."""
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def signing_key_new() -> SigningKey:
    """Generate a P-256 key pair and return an unsaved `SigningKey` (sealed private PEM, public JWK with kid)."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    jwk: dict[str, Any] = ECAlgorithm.to_jwk(private_key.public_key(), as_dict=True)
    kid = thumbprint(jwk)
    jwk.update({"kid": kid, "use": "sig", "alg": SIGNING_ALGORITHM})
    pem = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SigningKey(kid=kid, private_key=seal(pem, key=_box_key(), context=_context(kid)), public_jwk=jwk)


def signer_of(key: SigningKey) -> Signer:
    """The usable private key of a stored `SigningKey`. Raises `SealedValueError` for a wrong box key."""
    pem = unseal(key.private_key, key=_box_key(), context=_context(key.kid))
    private_key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(private_key, ec.EllipticCurvePrivateKey)
    return Signer(kid=key.kid, private_key=private_key)


def published_keys() -> list[SigningKey]:
    """Keys that may still verify a live token: the signer, and keys retired less than a token lifetime (plus
    the clock leeway) ago. Newest first."""
    horizon = timezone.now() - timedelta(
        seconds=settings.OAUTH_ACCESS_TOKEN_TTL_SECONDS + settings.OAUTH_CLOCK_LEEWAY_SECONDS
    )
    return list(SigningKey.objects.filter(Q(retired_at__isnull=True) | Q(retired_at__gt=horizon)))


def jwks() -> dict[str, list[dict[str, Any]]]:
    """The JSON Web Key Set (RFC 7517 §5) published at `/.well-known/jwks.json`."""
    return {"keys": [dict(k.public_jwk) for k in published_keys()]}


def public_key_for(kid: str) -> ec.EllipticCurvePublicKey | None:
    """The public key with this `kid`, or None if Keel never published it (or it is past its verifying life).

    A key seen once is cached for the process: its bytes never change, and tokens it signed carry their own
    `exp`, which is at most a token lifetime after the key was retired."""
    cached = _public_keys.get(kid)
    if cached is not None:
        return cached
    key = next((k for k in published_keys() if k.kid == kid), None)
    if key is None:
        return None
    public = ECAlgorithm.from_jwk(key.public_jwk)
    assert isinstance(public, ec.EllipticCurvePublicKey)
    with _public_keys_lock:
        _public_keys[kid] = public
    return public
