"""`GET /ops/events/stream`, the operators' cross-tenant live feed (ADR 0055), through Django's ASGI handler:
staff see every partner's events, in commit order, resumable; nobody else opens it — not anonymous callers,
not non-staff users, never an API key or a bearer token — and a partner's own stream stays tenant-scoped
while the staff feed is open."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from apps.employers.tests.factories import EmployerFactory
from apps.live import hub as hub_module
from apps.live.tests.test_stream import STATUSES, frames, nothing_more, record
from apps.partners.contracts import Scope
from apps.partners.tests.factories import PartnerFactory

# A hub per test (`apps.live.testing.fresh_hub`).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_hub")]

FEED = "/ops/events/stream"


@pytest.fixture
def staff(django_user_model):
    return django_user_model.objects.create_user("operator", password="pw-12345678", is_staff=True)


async def open_feed(user=None, **headers: str):
    client = AsyncClient()
    if user is not None:
        await client.aforce_login(user)
    return await client.get(FEED, headers=headers)


def test_staff_receive_every_partners_events_in_commit_order_with_the_partner(staff):
    acme, other = PartnerFactory(name="acme"), PartnerFactory(name="other")
    acme_employer, other_employer = EmployerFactory(partner=acme), EmployerFactory(partner=other)

    async def scenario() -> None:
        response = await open_feed(staff)
        assert response.status_code == 200
        assert response["Content-Type"] == "text/event-stream"
        assert response["Cache-Control"] == "no-cache"
        chunks = aiter(response.streaming_content)
        assert (await chunks.__anext__()).startswith(b"retry: 2000")

        await sync_to_async(record)(acme.pk, acme_employer.pk, STATUSES[:2], oid="a-1")
        await sync_to_async(record)(other.pk, other_employer.pk, STATUSES[:2], oid="o-1")

        got = await frames(chunks, 4)
        payloads = [json.loads(f["data"]) for f in got]
        assert [(p["partner"], p["employer"], p["type"]) for p in payloads] == [
            (acme.pk, acme_employer.pk, STATUSES[0]),
            (acme.pk, acme_employer.pk, STATUSES[1]),
            (other.pk, other_employer.pk, STATUSES[0]),
            (other.pk, other_employer.pk, STATUSES[1]),
        ]
        assert [p["id"] for p in payloads] == [f["id"] for f in got]
        assert [f["event"] for f in got] == [p["type"] for p in payloads]
        assert [p["position"] for p in payloads] == sorted(p["position"] for p in payloads)
        assert len({p["position"] for p in payloads}) == 4

    asyncio.run(scenario())


def test_staff_resume_after_last_event_id_exactly_once(staff):
    acme, other = PartnerFactory(name="acme"), PartnerFactory(name="other")

    async def scenario() -> None:
        first = await open_feed(staff)
        chunks = aiter(first.streaming_content)
        await chunks.__anext__()
        await sync_to_async(record)(acme.pk, None, STATUSES[:1], oid="a-1")
        received = await frames(chunks, 1)
        await chunks.aclose()

        await sync_to_async(record)(other.pk, None, STATUSES[:2], oid="o-1")  # while disconnected
        second = await open_feed(staff, **{"Last-Event-ID": received[0]["id"]})
        again = aiter(second.streaming_content)
        await again.__anext__()
        await sync_to_async(record)(acme.pk, None, STATUSES[1:2], oid="a-1")

        rest = await frames(again, 3)
        assert [(json.loads(f["data"])["partner"], f["event"]) for f in rest] == [
            (other.pk, STATUSES[0]),
            (other.pk, STATUSES[1]),
            (acme.pk, STATUSES[1]),
        ]
        assert len({f["id"] for f in received + rest}) == 4
        assert await nothing_more(again)

    asyncio.run(scenario())


def test_a_partners_stream_still_sees_only_its_own_events_beside_the_staff_feed(staff, make_key):
    acme, other = PartnerFactory(name="acme"), PartnerFactory(name="other")
    key = make_key(partner=acme, all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])

    async def scenario() -> None:
        feed = await open_feed(staff)
        mine = await AsyncClient().get("/api/v1/events/stream", headers={"Authorization": f"Api-Key {key.plaintext}"})
        feed_chunks, my_chunks = aiter(feed.streaming_content), aiter(mine.streaming_content)
        await feed_chunks.__anext__()
        await my_chunks.__anext__()

        await sync_to_async(record)(other.pk, None, STATUSES[:2], oid="o-1")
        await sync_to_async(record)(acme.pk, None, STATUSES[:1], oid="a-1")

        assert [json.loads(f["data"])["partner"] for f in await frames(feed_chunks, 3)] == [other.pk, other.pk, acme.pk]
        got = await frames(my_chunks, 1)
        assert [(f["event"], "partner" in json.loads(f["data"])) for f in got] == [(STATUSES[0], False)]
        assert await nothing_more(my_chunks)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    "case", ["anonymous", "non_staff", "inactive_staff", "api_key", "bearer", "staff_with_api_key"]
)
def test_everyone_but_signed_in_staff_is_refused_with_403(case, staff, django_user_model, make_key, make_bearer):
    partner = PartnerFactory(name="acme")
    user, headers = None, {}
    if case == "non_staff":
        user = django_user_model.objects.create_user("clerk", password="pw-12345678", is_staff=False)
    elif case == "inactive_staff":
        user = django_user_model.objects.create_user("gone", password="pw-12345678", is_staff=True, is_active=False)
    elif case in ("api_key", "staff_with_api_key"):
        key = make_key(partner=partner, all_employers=True, scopes=list(Scope.values))
        headers = {"Authorization": f"Api-Key {key.plaintext}"}
        user = staff if case == "staff_with_api_key" else None
    elif case == "bearer":
        bearer = make_bearer(partner=partner, all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])
        headers = {"Authorization": f"Bearer {bearer.token}"}

    response = asyncio.run(open_feed(user, **headers))

    assert response.status_code == 403, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == 403
    assert hub_module.hub.subscriber_count() == 0


def test_an_unknown_last_event_id_is_a_422_naming_the_header(staff):
    response = asyncio.run(open_feed(staff, **{"Last-Event-ID": "evt_nope"}))

    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["errors"] == [{"pointer": "/Last-Event-ID", "detail": "no event with this id"}]
    assert hub_module.hub.subscriber_count() == 0


def test_outside_the_asgi_server_the_feed_answers_503_at_once(client, staff):
    client.force_login(staff)

    response = client.get(FEED)

    assert response.status_code == 503
    assert response["Content-Type"] == "application/problem+json"
    assert hub_module.hub.subscriber_count() == 0


@pytest.mark.parametrize("revoke", ["deactivated", "no_longer_staff", "signed_out"])
def test_an_open_feed_ends_once_its_operator_loses_access_and_sends_nothing_after(staff, revoke, monkeypatch):
    """Deactivating an operator, taking away staff, or ending their session (all sessions flushed) ends an
    already open feed: the loop's ticker asks every `AUTH_RECHECK_SECONDS` (0.2 s here). Without it the feed
    never ends."""
    from django.contrib.sessions.models import Session

    from apps.live import streaming

    monkeypatch.setattr(streaming, "AUTH_RECHECK_SECONDS", 0.2, raising=False)
    acme = PartnerFactory(name="acme")
    employer = EmployerFactory(partner=acme)

    def take_access() -> None:
        if revoke == "signed_out":
            Session.objects.all().delete()
        else:
            field = "is_active" if revoke == "deactivated" else "is_staff"
            type(staff).objects.filter(pk=staff.pk).update(**{field: False})

    async def scenario() -> None:
        response = await open_feed(staff)
        chunks = aiter(response.streaming_content)
        await chunks.__anext__()
        await sync_to_async(record)(acme.pk, employer.pk, STATUSES[:1], oid="a-1")
        assert [f["event"] for f in await frames(chunks, 1)] == STATUSES[:1]

        await sync_to_async(take_access)()
        rest = b""
        async with asyncio.timeout(10):
            async for chunk in chunks:
                rest += chunk
        assert b"id:" not in rest

    asyncio.run(scenario())
