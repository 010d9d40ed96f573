"""`Authorization: Bearer <token>` behaves exactly as an API key with the same scopes and employers: tenancy
(404), scopes (403), one rate-limit bucket per client, idempotency per partner; bad tokens and revoked clients
are 401 with `WWW-Authenticate: Bearer error="invalid_token"`."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator

from apps.common.actors import Actor
from apps.employers.models import Employer
from apps.employers.tests.factories import EmployerFactory
from apps.oauth.models import OAuthClient
from apps.oauth.services import oauth_client_revoke
from apps.oauth.testing import BearerClient
from apps.oauth.tokens import access_token_mint
from apps.partners.contracts import Scope
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


@pytest.fixture
def partner():
    return PartnerFactory(name="acme-hr", rate_limit_per_minute=50, rate_limit_per_hour=50, rate_limit_per_day=50)


def assert_invalid_token(response, detail: str) -> None:
    assert response.status_code == 401, response.content
    assert response["Content-Type"] == PROBLEM
    assert response.json()["detail"] == detail
    assert response["WWW-Authenticate"].startswith('Bearer realm="keel", error="invalid_token"')


def test_token_for_employer_a_gets_404_on_employer_b_like_an_api_key(partner, make_bearer, make_key):
    employer_a, employer_b = EmployerFactory(partner=partner), EmployerFactory(partner=partner)
    bearer = make_bearer(partner=partner, employers=[employer_a], scopes=[Scope.EMPLOYERS_READ])
    key = make_key(partner=partner, employers=[employer_a], scopes=[Scope.EMPLOYERS_READ])

    for caller in (bearer, key):
        assert caller.get(f"/api/v1/employers/{employer_a.pk}").status_code == 200
        assert caller.get(f"/api/v1/employers/{employer_b.pk}").status_code == 404
        assert [e["id"] for e in caller.get("/api/v1/employers").json()["results"]] == [employer_a.pk]


def test_another_partners_employer_is_404(partner, make_bearer):
    foreign = EmployerFactory(partner=PartnerFactory(name="other"))
    bearer = make_bearer(partner=partner, all_employers=True)

    assert bearer.get(f"/api/v1/employers/{foreign.pk}").status_code == 404


def test_missing_scope_is_403_and_writes_nothing(partner, make_bearer):
    bearer = make_bearer(partner=partner, all_employers=True, scopes=[Scope.EMPLOYERS_READ])

    response = bearer.post("/api/v1/employers", {"name": "Globex", "external_ref": "GLX-1"})

    assert response.status_code == 403
    assert response.json()["detail"] == "This access token lacks the `employers:write` scope."
    assert not Employer.objects.exists()


def test_a_token_narrowed_at_the_token_endpoint_carries_only_its_scopes(partner, make_oauth_client):
    from apps.oauth.testing import token_request

    client, secret = make_oauth_client(partner=partner, all_employers=True)
    token = token_request(client.client_id, secret, scope="employers:read").json()["access_token"]

    response = BearerClient(token).post("/api/v1/employers", {"name": "Globex", "external_ref": "GLX-1"})

    assert response.status_code == 403
    assert not Employer.objects.exists()


def test_one_rate_limit_bucket_per_client_however_many_tokens(partner, make_oauth_client):
    from apps.oauth.testing import token_request

    client, secret = make_oauth_client(partner=partner, all_employers=True)
    first, second = (BearerClient(token_request(client.client_id, secret).json()["access_token"]) for _ in range(2))

    remaining = [int(c.get("/api/v1/employers")["RateLimit-Remaining"]) for c in (first, second, first)]

    assert remaining == [49, 48, 47]


def test_idempotency_is_scoped_to_the_partner_across_both_doors(partner, make_bearer, make_key):
    bearer = make_bearer(partner=partner, all_employers=True)
    key = make_key(partner=partner, all_employers=True)
    body = {"name": "Globex", "external_ref": "GLX-1"}

    created = bearer.post("/api/v1/employers", body, HTTP_IDEMPOTENCY_KEY="same-key-1")
    replayed = key.post("/api/v1/employers", body, HTTP_IDEMPOTENCY_KEY="same-key-1")

    assert created.status_code == 201, created.content
    assert replayed.status_code == 201
    assert replayed["Idempotent-Replayed"] == "true"
    assert replayed.json() == created.json()
    assert Employer.objects.count() == 1


def test_expired_token_is_401(partner, make_oauth_client, settings):
    client, _ = make_oauth_client(partner=partner, all_employers=True)
    ttl, leeway = settings.OAUTH_ACCESS_TOKEN_TTL_SECONDS, settings.OAUTH_CLOCK_LEEWAY_SECONDS
    expired = access_token_mint(client=client, scopes=client.scopes, now=time.time() - ttl - leeway - 5)

    assert_invalid_token(BearerClient(expired.token).get("/api/v1/employers"), "The access token has expired.")


def test_tampered_token_is_401(partner, make_bearer):
    import base64
    import json

    bearer = make_bearer(partner=partner, scopes=[Scope.EMPLOYERS_READ], all_employers=True)
    header, payload, signature = bearer.token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["scope"] = " ".join(Scope.values)
    forged_payload = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()

    response = BearerClient(f"{header}.{forged_payload}.{signature}").post("/api/v1/employers", {"name": "X"})

    assert_invalid_token(response, "The access token's signature does not verify.")
    assert not Employer.objects.exists()


def test_wrong_audience_is_401(partner, make_oauth_client, settings):
    client, _ = make_oauth_client(partner=partner, all_employers=True)
    ours = settings.OAUTH_AUDIENCE
    settings.OAUTH_AUDIENCE = "https://another-api.example/"
    token = access_token_mint(client=client, scopes=client.scopes).token
    settings.OAUTH_AUDIENCE = ours

    response = BearerClient(token).get("/api/v1/employers")

    assert_invalid_token(response, "The access token is not meant for this API (aud).")


@pytest.mark.parametrize("token", ["abc", "a.b.c", "", "é"])
def test_garbage_bearer_is_401_never_500(client, token):
    response = client.get("/api/v1/employers", HTTP_AUTHORIZATION=f"Bearer {token}")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith('Bearer realm="keel", error="invalid_token"')


def test_revoking_the_client_rejects_its_tokens_on_the_next_request(partner, make_bearer):
    bearer = make_bearer(partner=partner, all_employers=True)
    assert bearer.get("/api/v1/employers").status_code == 200

    oauth_client_revoke(client_id=bearer.oauth_client.client_id, actor=Actor.system("tests"))

    assert_invalid_token(bearer.get("/api/v1/employers"), "The OAuth client of this token has been revoked.")


def test_inactive_partner_is_401(partner, make_bearer):
    bearer = make_bearer(partner=partner, all_employers=True)
    type(partner).objects.filter(pk=partner.pk).update(is_active=False)

    assert_invalid_token(bearer.get("/api/v1/employers"), "The partner is not active.")


def test_no_credentials_challenge_names_both_doors(client):
    response = client.get("/api/v1/employers")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Api-Key, Bearer realm="keel"'


def test_api_key_requests_are_unchanged_by_the_bearer_door(partner, make_key):
    key = make_key(partner=partner, all_employers=True)

    assert key.get("/api/v1/employers").status_code == 200
    assert not OAuthClient.objects.exists()


def test_openapi_documents_both_schemes():
    schema = SchemaGenerator().get_schema(request=None, public=True)

    schemes = schema["components"]["securitySchemes"]
    assert schemes["ApiKeyAuth"]["type"] == "apiKey"
    assert schemes["OAuth2"]["type"] == "oauth2"
    assert schemes["OAuth2"]["flows"]["clientCredentials"]["tokenUrl"] == "/oauth/token"
    assert set(schemes["OAuth2"]["flows"]["clientCredentials"]["scopes"]) == set(Scope.values)
    operation = schema["paths"]["/api/v1/employers"]["get"]
    assert {name for requirement in operation["security"] for name in requirement} == {"ApiKeyAuth", "OAuth2"}


def test_last_use_is_written_at_most_once_a_minute_per_client(partner, make_bearer):
    from apps.partners.principal_cache import principal_cache_clear

    employer = EmployerFactory(partner=partner)
    bearer = make_bearer(partner=partner, all_employers=True, scopes=[Scope.EMPLOYERS_READ])
    client = OAuthClient.objects.get(pk=bearer.oauth_client.pk)
    issued_use = client.last_used_at  # the token request itself counts as a use
    assert issued_use is not None

    for _ in range(3):
        assert bearer.get(f"/api/v1/employers/{employer.pk}").status_code == 200
    assert OAuthClient.objects.get(pk=client.pk).last_used_at == issued_use  # within the minute: no write

    a_minute_ago = issued_use - timedelta(seconds=61)
    OAuthClient.objects.filter(pk=client.pk).update(last_used_at=a_minute_ago)
    # `update()` sends no signal: drop the process's principal cache (ADR 0054) as a change through a service would,
    # so the next request sees the stored last use rather than the cached client's.
    principal_cache_clear()
    assert bearer.get(f"/api/v1/employers/{employer.pk}").status_code == 200
    touched = OAuthClient.objects.get(pk=client.pk).last_used_at
    assert touched is not None
    assert touched > issued_use
    assert bearer.get(f"/api/v1/employers/{employer.pk}").status_code == 200
    assert OAuthClient.objects.get(pk=client.pk).last_used_at == touched


def test_a_client_kept_in_the_principal_cache_records_its_use_once_not_on_every_request(partner, make_bearer):
    # Given a client whose stored last use is over a minute old, and a cold principal cache (ADR 0054)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.partners.principal_cache import principal_cache_clear

    employer = EmployerFactory(partner=partner)
    bearer = make_bearer(partner=partner, all_employers=True, scopes=[Scope.EMPLOYERS_READ])
    OAuthClient.objects.filter(pk=bearer.oauth_client.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    principal_cache_clear()

    # When five requests follow one another within the cache's 5 s
    with CaptureQueriesContext(connection) as queries:
        for _ in range(5):
            assert bearer.get(f"/api/v1/employers/{employer.pk}").status_code == 200

    # Then the first one writes the last use and the four served by the cached client send no statement for it
    writes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('UPDATE "oauth_oauthclient"')]
    assert len(writes) == 1, writes


def test_a_stale_copy_of_a_client_does_not_overwrite_a_use_recorded_elsewhere(partner, make_bearer):
    # Given a copy of the client read when its last use was two minutes old (another process's cached principal)
    from apps.partners.authentication import touch_last_used

    bearer = make_bearer(partner=partner, all_employers=True, scopes=[Scope.EMPLOYERS_READ])
    OAuthClient.objects.filter(pk=bearer.oauth_client.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    stale = OAuthClient.objects.get(pk=bearer.oauth_client.pk)
    # and a use recorded since by someone else (the token endpoint, another web process)
    recorded = timezone.now() - timedelta(seconds=10)
    OAuthClient.objects.filter(pk=stale.pk).update(last_used_at=recorded)

    # When the stale copy records a use
    touch_last_used(stale)

    # Then the row keeps the use recorded within the minute (the UPDATE is conditional in the database), and the copy
    # no longer looks a minute old
    assert OAuthClient.objects.get(pk=stale.pk).last_used_at == recorded
    assert stale.last_used_at is not None
    assert stale.last_used_at > recorded
