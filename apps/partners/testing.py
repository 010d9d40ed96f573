"""Partner API test helpers: a DRF client bound to a freshly created API key (pytest plugin)."""

from __future__ import annotations

import pytest


class KeyClient:
    """A DRF APIClient bound to one API key, with JSON by default."""

    def __init__(self, plaintext: str, api_key: object) -> None:
        from rest_framework.test import APIClient

        self.api_key = api_key
        self.plaintext = plaintext
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Api-Key {plaintext}")

    def __getattr__(self, name: str) -> object:
        method = getattr(self.client, name)
        if name in ("post", "patch", "put"):

            def with_json(path: str, data: object = None, **kwargs: object) -> object:
                kwargs.setdefault("format", "json")
                return method(path, data, **kwargs)

            return with_json
        return method


@pytest.fixture(autouse=True)
def _clear_principal_cache():
    """Principals are cached per process for up to 5 s (ADR 0054); no test sees another's."""
    from apps.partners.principal_cache import principal_cache

    principal_cache.clear()
    yield
    principal_cache.clear()


@pytest.fixture
def make_key():
    """make_key(partner=..., scopes=[...], employers=[...] | all_employers=True, expires_at=None)."""
    from apps.common.actors import Actor
    from apps.partners.contracts import Scope
    from apps.partners.services import api_key_create

    def _make(*, partner, scopes=None, employers=(), all_employers=False, expires_at=None) -> KeyClient:
        api_key, plaintext = api_key_create(
            partner=partner,
            name="test key",
            scopes=scopes if scopes is not None else list(Scope.values),
            employer_ids=[e.pk for e in employers],
            all_employers=all_employers,
            expires_at=expires_at,
            actor=Actor.system("tests"),
        )
        return KeyClient(plaintext, api_key)

    return _make
