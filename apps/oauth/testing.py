"""OAuth test helpers (pytest plugin): a client created through the service and a DRF client bound to a Bearer
token minted through the real token endpoint."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlencode

import pytest

FORM = "application/x-www-form-urlencoded"


class BearerClient:
    """A DRF APIClient sending `Authorization: Bearer <token>`, with JSON by default."""

    def __init__(self, token: str) -> None:
        from rest_framework.test import APIClient

        self.token = token
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")

    def __getattr__(self, name: str) -> object:
        method = getattr(self.client, name)
        if name in ("post", "patch", "put"):

            def with_json(path: str, data: object = None, **kwargs: object) -> object:
                kwargs.setdefault("format", "json")
                return method(path, data, **kwargs)

            return with_json
        return method


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


def token_request(client_id: str, secret: str, **form: str) -> Any:
    """POST /oauth/token with HTTP Basic client authentication; `form` defaults to the client-credentials grant."""
    from django.test import Client

    form.setdefault("grant_type", "client_credentials")
    return Client().post(
        "/oauth/token", urlencode(form), content_type=FORM, HTTP_AUTHORIZATION=basic(client_id, secret)
    )


@pytest.fixture
def make_oauth_client():
    """make_oauth_client(partner=..., scopes=[...], employers=[...] | all_employers=True) → (client, secret)."""
    from apps.common.actors import Actor
    from apps.oauth.services import oauth_client_create
    from apps.partners.contracts import Scope

    def _make(*, partner, scopes=None, employers=(), all_employers=False):
        return oauth_client_create(
            partner_id=partner.pk,
            partner_name=partner.name,
            name="test client",
            scopes=scopes if scopes is not None else list(Scope.values),
            employer_ids=[e.pk for e in employers],
            all_employers=all_employers,
            actor=Actor.system("tests"),
        )

    return _make


@pytest.fixture
def make_bearer(make_oauth_client):
    """make_bearer(partner=..., scopes=..., employers=... | all_employers=True) → BearerClient with `.oauth_client`."""

    def _make(**kwargs) -> BearerClient:
        client, secret = make_oauth_client(**kwargs)
        response = token_request(client.client_id, secret)
        assert response.status_code == 200, response.content
        bearer = BearerClient(response.json()["access_token"])
        bearer.oauth_client = client  # type: ignore[attr-defined]
        bearer.secret = secret  # type: ignore[attr-defined]
        return bearer

    return _make
