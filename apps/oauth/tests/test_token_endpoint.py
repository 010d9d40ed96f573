"""`POST /oauth/token` and `/.well-known/jwks.json`: RFC 6749 §4.4 and §5.2, RFC 9068 claims, verified with an
independent JOSE library (joserfc) against the published key set; key rotation."""

from __future__ import annotations

import io
import time
from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.test import Client
from joserfc import jwt as jose_jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import KeySet

from apps.audit.models import AuditEvent
from apps.oauth.models import OAuthClient, SigningKey
from apps.oauth.testing import FORM, BearerClient, basic, token_request
from apps.partners.contracts import Scope
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def registered(make_oauth_client):
    partner = PartnerFactory(name="acme-hr")
    return make_oauth_client(partner=partner, all_employers=True, scopes=[Scope.EMPLOYERS_READ, Scope.LEDGER_READ])


def _jwks() -> KeySet:
    response = Client().get("/.well-known/jwks.json")
    assert response.status_code == 200
    return KeySet.import_key_set(response.json())


def test_right_client_gets_a_token_whose_claims_and_signature_verify_against_the_jwks(registered, settings):
    client, secret = registered
    before = int(time.time())

    response = token_request(client.client_id, secret)

    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.OAUTH_ACCESS_TOKEN_TTL_SECONDS
    assert body["scope"] == "employers:read ledger:read"
    decoded = jose_jwt.decode(body["access_token"], _jwks(), algorithms=["ES256"])
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.header["alg"] == "ES256"
    assert decoded.header["kid"] == SigningKey.objects.get().kid
    claims = decoded.claims
    assert set(claims) == {"iss", "sub", "aud", "exp", "iat", "jti", "client_id", "scope"}
    assert claims["iss"] == settings.OAUTH_ISSUER
    assert claims["aud"] == settings.OAUTH_AUDIENCE
    assert claims["sub"] == claims["client_id"] == client.client_id
    assert claims["scope"] == "employers:read ledger:read"
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] == claims["iat"] + settings.OAUTH_ACCESS_TOKEN_TTL_SECONDS
    registry = jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": settings.OAUTH_ISSUER},
        aud={"essential": True, "value": settings.OAUTH_AUDIENCE},
    )
    registry.validate(claims)
    client.refresh_from_db()
    assert client.last_used_at is not None


def test_client_may_authenticate_in_the_form_and_ask_for_fewer_scopes(registered):
    client, secret = registered
    form = {"grant_type": "client_credentials", "client_id": client.client_id, "client_secret": secret}

    response = Client().post("/oauth/token", urlencode({**form, "scope": "ledger:read"}), content_type=FORM)

    assert response.status_code == 200, response.content
    assert response.json()["scope"] == "ledger:read"
    claims = jose_jwt.decode(response.json()["access_token"], _jwks(), algorithms=["ES256"]).claims
    assert claims["scope"] == "ledger:read"


def test_each_token_has_its_own_jti(registered):
    client, secret = registered
    tokens = [token_request(client.client_id, secret).json()["access_token"] for _ in range(2)]
    jtis = {jose_jwt.decode(t, _jwks(), algorithms=["ES256"]).claims["jti"] for t in tokens}
    assert len(jtis) == 2


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("wrong_secret", 401, "invalid_client"),
        ("unknown_client", 401, "invalid_client"),
        ("no_credentials", 401, "invalid_client"),
        ("unsupported_grant", 400, "unsupported_grant_type"),
        ("missing_grant", 400, "invalid_request"),
        ("scope_beyond_client", 400, "invalid_scope"),
        ("unknown_scope", 400, "invalid_scope"),
        ("json_body", 400, "invalid_request"),
        ("two_ways_of_client_auth", 400, "invalid_request"),
        ("revoked_client", 401, "invalid_client"),
        ("bad_basic", 401, "invalid_client"),
    ],
)
def test_token_errors_follow_rfc6749_and_change_nothing(registered, case, status, error):
    client, secret = registered
    form: dict[str, str] = {"grant_type": "client_credentials"}
    headers = {"HTTP_AUTHORIZATION": basic(client.client_id, secret)}
    content_type = FORM
    if case == "wrong_secret":
        headers = {"HTTP_AUTHORIZATION": basic(client.client_id, secret + "x")}
    elif case == "unknown_client":
        headers = {"HTTP_AUTHORIZATION": basic("kc_nobody", secret)}
    elif case == "no_credentials":
        headers = {}
    elif case == "unsupported_grant":
        form["grant_type"] = "password"
    elif case == "missing_grant":
        form = {}
    elif case == "scope_beyond_client":
        form["scope"] = "ledger:read ledger:write"
    elif case == "unknown_scope":
        form["scope"] = "root"
    elif case == "json_body":
        content_type = "application/json"
    elif case == "two_ways_of_client_auth":
        form["client_secret"] = secret
    elif case == "revoked_client":
        OAuthClient.objects.filter(pk=client.pk).update(revoked_at="2026-01-01T00:00:00Z")
    elif case == "bad_basic":
        headers = {"HTTP_AUTHORIZATION": "Basic %%%"}
    audit_before, keys_before = AuditEvent.objects.count(), list(SigningKey.objects.values_list("kid", flat=True))

    body = urlencode(form) if content_type == FORM else '{"grant_type": "client_credentials"}'
    response = Client().post("/oauth/token", body, content_type=content_type, **headers)

    assert response.status_code == status, response.content
    assert response.json()["error"] == error
    assert isinstance(response.json()["error_description"], str)
    assert response["Cache-Control"] == "no-store"
    if status == 401:
        assert response["WWW-Authenticate"] == 'Basic realm="keel"'
    # Nothing changed: no key created (the client's creation made the first one), no use recorded, no audit row.
    assert list(SigningKey.objects.values_list("kid", flat=True)) == keys_before
    assert len(keys_before) == 1
    assert OAuthClient.objects.get(pk=client.pk).last_used_at is None
    assert AuditEvent.objects.count() == audit_before


def test_get_on_the_token_endpoint_is_405(registered):
    assert Client().get("/oauth/token").status_code == 405


def test_after_rotation_old_tokens_verify_until_expiry_and_new_ones_use_the_new_key(registered, settings):
    from django.core.management import call_command

    client, secret = registered
    old_token = token_request(client.client_id, secret).json()["access_token"]
    old_kid = SigningKey.objects.get().kid

    call_command("oauth_key_rotate", stdout=io.StringIO())

    new_token = token_request(client.client_id, secret).json()["access_token"]
    keys = _jwks()
    new_decoded = jose_jwt.decode(new_token, keys, algorithms=["ES256"])
    assert new_decoded.header["kid"] != old_kid
    assert new_decoded.header["kid"] == SigningKey.objects.get(retired_at__isnull=True).kid
    assert jose_jwt.decode(old_token, keys, algorithms=["ES256"]).header["kid"] == old_kid
    assert BearerClient(old_token).get("/api/v1/employers").status_code == 200
    assert BearerClient(new_token).get("/api/v1/employers").status_code == 200
    assert AuditEvent.objects.filter(action="oauth_signing_key.rotated").count() == 2  # first key + rotation

    # Once every token the old key signed has expired, the key leaves the published set.
    SigningKey.objects.filter(kid=old_kid).update(
        retired_at=SigningKey.objects.get(kid=old_kid).retired_at
        - timedelta(seconds=settings.OAUTH_ACCESS_TOKEN_TTL_SECONDS + 31)
    )
    assert [k["kid"] for k in Client().get("/.well-known/jwks.json").json()["keys"]] == [new_decoded.header["kid"]]


def test_a_token_signed_by_another_key_with_the_same_kid_fails_the_signature_check(registered):
    from joserfc.jwk import ECKey

    client, secret = registered
    token = token_request(client.client_id, secret).json()["access_token"]
    real = jose_jwt.decode(token, _jwks(), algorithms=["ES256"])
    forged = jose_jwt.encode(dict(real.header), dict(real.claims), ECKey.generate_key("P-256"), algorithms=["ES256"])

    with pytest.raises(BadSignatureError):
        jose_jwt.decode(forged, _jwks(), algorithms=["ES256"])
    response = BearerClient(forged).get("/api/v1/employers")
    assert response.status_code == 401
    assert response.json()["detail"] == "The access token's signature does not verify."


def test_the_first_client_of_a_fresh_install_publishes_the_key_its_tokens_will_carry(registered):
    """A resource server that fetches the JWKS once, before any token exists, can verify the first token
    (newcomer trial: the key set was empty until the first token was minted)."""
    client, secret = registered
    published = _jwks()

    token = token_request(client.client_id, secret)
    claims = jose_jwt.decode(token.json()["access_token"], published)

    assert [k.kid for k in published] == [SigningKey.objects.get().kid]
    assert claims.claims["client_id"] == client.client_id
