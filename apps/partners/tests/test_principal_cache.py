"""The principal cache (ADR 0054): a key or OAuth client read once is trusted for at most 5 s per process; every
change made through this process clears it at once; a change made elsewhere (another web process, an operator's
shell: here a bare `.update()`, which no invalidation sees) takes effect within 5 s, with or without Redis."""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.utils import timezone

from apps.common.actors import Actor
from apps.employers.tests.factories import EmployerFactory
from apps.oauth.models import OAuthClient
from apps.oauth.services import oauth_client_revoke
from apps.partners.contracts import Scope
from apps.partners.models import APIKey, Partner
from apps.partners.principal_cache import MAX_TTL_SECONDS, PrincipalCache, principal_cache
from apps.partners.services import api_key_revoke

pytestmark = pytest.mark.django_db


class FakeClock:
    """Seconds that move only when a test says so."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(principal_cache, "clock", fake)
    return fake


@pytest.fixture
def employer():
    return EmployerFactory()


def employer_url(employer) -> str:
    return f"/api/v1/employers/{employer.pk}"


def unreachable_redis_url() -> str:
    """A Redis URL on a loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"


@dataclass
class Door:
    """One way in (an API key or an OAuth client's Bearer token): how to make a caller bound to employers, revoke
    it behind every process's back (a bare `.update()`) or through its service, and reach its employer binding."""

    make: Callable[..., Any]
    revoke_elsewhere: Callable[[Any], None]
    revoke: Callable[[Any], None]
    binding: Callable[[Any], Any]
    revoked_detail: str


@pytest.fixture(params=["api_key", "oauth"])
def door(request, make_key, make_bearer) -> Door:
    if request.param == "api_key":
        return Door(
            make=make_key,
            revoke_elsewhere=lambda c: APIKey.objects.filter(pk=c.api_key.pk).update(
                revoked=True, revoked_at=timezone.now()
            ),
            revoke=lambda c: api_key_revoke(prefix=c.api_key.prefix, actor=Actor.system("tests")),
            binding=lambda c: c.api_key.employers,
            revoked_detail="The API key has been revoked.",
        )
    return Door(
        make=make_bearer,
        revoke_elsewhere=lambda c: OAuthClient.objects.filter(pk=c.oauth_client.pk).update(revoked_at=timezone.now()),
        revoke=lambda c: oauth_client_revoke(client_id=c.oauth_client.client_id, actor=Actor.system("tests")),
        binding=lambda c: c.oauth_client.employers,
        revoked_detail="The OAuth client of this token has been revoked.",
    )


def test_a_caller_revoked_elsewhere_stops_working_within_5_seconds(door, employer, clock):
    client = door.make(partner=employer.partner, employers=[employer])
    assert client.get(employer_url(employer)).status_code == 200

    # Another process revokes it: this process is not told.
    door.revoke_elsewhere(client)

    clock.now += MAX_TTL_SECONDS - 0.1
    assert client.get(employer_url(employer)).status_code == 200  # the window the bound allows
    clock.now += 0.1
    response = client.get(employer_url(employer))
    assert response.status_code == 401
    assert response.json()["detail"] == door.revoked_detail


def test_revoking_through_the_service_takes_effect_at_once(door, employer, clock):
    client = door.make(partner=employer.partner, employers=[employer])
    assert client.get(employer_url(employer)).status_code == 200

    door.revoke(client)

    assert client.get(employer_url(employer)).status_code == 401


def test_an_employer_binding_change_takes_effect_at_once(door, employer, clock):
    other = EmployerFactory(partner=employer.partner)
    client = door.make(partner=employer.partner, employers=[employer])
    assert client.get(employer_url(employer)).status_code == 200
    assert client.get(employer_url(other)).status_code == 404

    door.binding(client).set([other])

    assert client.get(employer_url(employer)).status_code == 404
    assert client.get(employer_url(other)).status_code == 200


def test_the_5_second_bound_holds_while_redis_is_down(make_key, employer, clock, settings):
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": unreachable_redis_url(),
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        }
    }
    client = make_key(partner=employer.partner, employers=[employer])
    assert client.get(employer_url(employer)).status_code == 200  # rate limits fall back to the process

    APIKey.objects.filter(pk=client.api_key.pk).update(revoked=True, revoked_at=timezone.now())
    clock.now += MAX_TTL_SECONDS

    assert client.get(employer_url(employer)).status_code == 401


def test_a_scope_change_takes_effect_at_once(make_key, employer, clock):
    client = make_key(partner=employer.partner, employers=[employer])
    assert client.get(employer_url(employer)).status_code == 200

    api_key = APIKey.objects.get(pk=client.api_key.pk)
    api_key.scopes = [Scope.ENDORSEMENTS_READ]  # what the admin's change form saves
    api_key.save()

    assert client.get(employer_url(employer)).status_code == 403


def test_removing_an_employer_from_the_binding_takes_effect_at_once(make_key, employer, clock):
    client = make_key(partner=employer.partner, employers=[employer])
    assert client.get(employer_url(employer)).status_code == 200
    assert len(principal_cache) == 1

    client.api_key.employers.remove(employer)

    assert len(principal_cache) == 0
    assert client.get(employer_url(employer)).status_code == 404


def test_a_change_of_an_employer_clears_the_cache(make_key, employer, clock):
    client = make_key(partner=employer.partner, employers=[employer])
    assert client.get(employer_url(employer)).status_code == 200
    assert len(principal_cache) == 1

    employer.name = "Renamed"
    employer.save()

    assert len(principal_cache) == 0


def test_deactivating_the_partner_takes_effect_at_once(make_key, employer, clock):
    client = make_key(partner=employer.partner, employers=[employer])
    assert client.get(employer_url(employer)).status_code == 200

    partner = Partner.objects.get(pk=employer.partner_id)
    partner.is_active = False
    partner.save()

    response = client.get(employer_url(employer))
    assert response.status_code == 401
    assert response.json()["detail"] == "The partner is not active."


def test_a_wrong_secret_for_a_cached_prefix_is_refused(make_key, employer, clock):
    client = make_key(partner=employer.partner, employers=[employer])
    assert client.get(employer_url(employer)).status_code == 200
    prefix = client.plaintext.partition(".")[0]
    client.client.credentials(HTTP_AUTHORIZATION=f"Api-Key {prefix}.{'x' * 32}")

    assert client.get(employer_url(employer)).status_code == 401


def test_a_cached_key_expires_on_time(make_key, employer, clock, time_machine):
    expires_at = timezone.now() + timezone.timedelta(seconds=2)
    client = make_key(partner=employer.partner, employers=[employer], expires_at=expires_at)
    assert client.get(employer_url(employer)).status_code == 200

    time_machine.move_to(expires_at + timezone.timedelta(seconds=1))

    response = client.get(employer_url(employer))
    assert response.status_code == 401
    assert response.json()["detail"] == "The API key has expired."


def test_cached_keys_keep_their_tenants_apart(make_key, employer, clock):
    mine = make_key(partner=employer.partner, employers=[employer])
    other_employer = EmployerFactory()
    theirs = make_key(partner=other_employer.partner, employers=[other_employer])
    assert mine.get(employer_url(employer)).status_code == 200
    assert theirs.get(employer_url(other_employer)).status_code == 200

    # Both principals are cached now; each still sees only its own employer.
    assert mine.get(employer_url(other_employer)).status_code == 404
    assert theirs.get(employer_url(employer)).status_code == 404
    assert mine.get(employer_url(employer)).status_code == 200


def test_a_token_narrower_than_its_cached_client_keeps_its_own_scopes(make_oauth_client, employer, clock):
    from apps.oauth.testing import BearerClient, token_request

    client, secret = make_oauth_client(partner=employer.partner, employers=[employer])
    wide = BearerClient(token_request(client.client_id, secret).json()["access_token"])
    narrow = BearerClient(token_request(client.client_id, secret, scope="endorsements:read").json()["access_token"])

    assert wide.get(employer_url(employer)).status_code == 200
    assert narrow.get(employer_url(employer)).status_code == 403


def test_the_ttl_is_clamped_to_5_seconds_and_0_turns_the_cache_off(settings):
    cache = PrincipalCache(clock=FakeClock())
    settings.API_PRINCIPAL_CACHE_SECONDS = 60
    assert cache.ttl_seconds() == MAX_TTL_SECONDS
    cache.put("k", "v")
    cache.clock.now += MAX_TTL_SECONDS  # type: ignore[attr-defined]
    assert cache.get("k") is None

    settings.API_PRINCIPAL_CACHE_SECONDS = 0
    cache.put("k", "v")
    assert cache.get("k") is None


def test_the_cache_is_bounded_and_drops_the_oldest_first(settings):
    cache = PrincipalCache(clock=FakeClock(), max_entries=2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)

    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (None, 2, 3)
