"""`GET /api/v1/events/stream` through Django's ASGI handler: live delivery in commit order, resume with
Last-Event-ID exactly once, tenancy, scopes and filters; problem+json refusals."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from asgiref.sync import sync_to_async
from django.db import transaction
from django.test import AsyncClient

from apps.common.serializers import choices_message
from apps.common.text import EMPTY_PARAMETER_MESSAGE
from apps.employers.tests.factories import EmployerFactory
from apps.live import hub as hub_module
from apps.partners.contracts import Scope
from apps.partners.tests.factories import PartnerFactory
from apps.partners.webhooks.contracts import READ_SCOPE_OF_OBJECT_TYPE, EventDraft, EventObjectType, EventType
from apps.partners.webhooks.events import events_sequence, partner_events_record

# A hub per test (`apps.live.testing.fresh_hub`).
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_hub")]

STATUSES = ["endorsement.received", "endorsement.validated", "endorsement.funds_locked", "endorsement.sent"]


def record(partner_id: int, employer_id: int | None, types: list[str], oid: str = "e-1") -> None:
    drafts = [
        EventDraft(type=t, partner_id=partner_id, employer_id=employer_id, object_type="endorsement", object_id=oid)
        for t in types
    ]
    with transaction.atomic():
        partner_events_record(drafts)
    events_sequence()


async def frames(chunks: AsyncIterator[bytes], count: int, timeout: float = 10.0) -> list[dict[str, str]]:
    """The next `count` event frames (comments and the retry line skipped), each as {id, event, data}."""
    out: list[dict[str, str]] = []
    buffer = b""

    async def read() -> None:
        nonlocal buffer
        async for chunk in chunks:
            buffer += chunk
            while b"\n\n" in buffer:
                raw, buffer = buffer.split(b"\n\n", 1)
                fields = dict(
                    line.split(": ", 1) for line in raw.decode().splitlines() if line and not line.startswith(":")
                )
                if "id" in fields:
                    out.append(fields)
                    if len(out) == count:
                        return

    await asyncio.wait_for(read(), timeout)
    return out


async def nothing_more(chunks: AsyncIterator[bytes], wait: float = 0.6) -> bool:
    try:
        chunk = await asyncio.wait_for(chunks.__anext__(), wait)
    except TimeoutError:
        return True
    return chunk.startswith(b":")


def open_stream(credentials: str, path: str = "/api/v1/events/stream", **headers: str):
    if credentials:
        headers["Authorization"] = credentials
    return AsyncClient().get(path, headers=headers)


def test_a_connected_client_receives_the_status_events_in_order_and_another_partner_nothing(make_key):
    partner, other = PartnerFactory(name="acme"), PartnerFactory(name="other")
    employer = EmployerFactory(partner=partner)
    mine = make_key(partner=partner, all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])
    theirs = make_key(partner=other, all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])

    async def scenario() -> None:
        response = await open_stream(f"Api-Key {mine.plaintext}")
        foreign = await open_stream(f"Api-Key {theirs.plaintext}")
        assert response.status_code == 200
        assert response["Content-Type"] == "text/event-stream"
        assert response["Cache-Control"] == "no-cache"
        chunks, foreign_chunks = aiter(response.streaming_content), aiter(foreign.streaming_content)
        assert (await chunks.__anext__()).startswith(b"retry: 2000")
        assert (await foreign_chunks.__anext__()).startswith(b"retry: 2000")

        await sync_to_async(record)(partner.pk, employer.pk, STATUSES)

        got = await frames(chunks, len(STATUSES))
        assert [f["event"] for f in got] == STATUSES
        payloads = [json.loads(f["data"]) for f in got]
        assert [p["id"] for p in payloads] == [f["id"] for f in got]
        assert [p["sequence"] for p in payloads] == [1, 2, 3, 4]
        assert [p["position"] for p in payloads] == sorted(p["position"] for p in payloads)
        assert await nothing_more(foreign_chunks)

    asyncio.run(scenario())


def test_reconnecting_with_last_event_id_receives_the_rest_exactly_once(make_key):
    partner = PartnerFactory(name="acme")
    employer = EmployerFactory(partner=partner)
    key = make_key(partner=partner, all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])

    async def scenario() -> None:
        first = await open_stream(f"Api-Key {key.plaintext}")
        chunks = aiter(first.streaming_content)
        await chunks.__anext__()
        await sync_to_async(record)(partner.pk, employer.pk, STATUSES[:2])
        received = await frames(chunks, 2)
        await chunks.aclose()  # disconnect after event N = 2

        # Events committed while disconnected, then more after the reconnect.
        await sync_to_async(record)(partner.pk, employer.pk, STATUSES[2:3])
        second = await open_stream(f"Api-Key {key.plaintext}", **{"Last-Event-ID": received[-1]["id"]})
        again = aiter(second.streaming_content)
        await again.__anext__()
        await sync_to_async(record)(partner.pk, employer.pk, STATUSES[3:])

        rest = await frames(again, 2)
        assert [f["event"] for f in rest] == STATUSES[2:]
        assert len({f["id"] for f in received + rest}) == 4
        assert await nothing_more(again)

    asyncio.run(scenario())


def test_employer_bound_key_gets_only_its_employers_events_and_the_type_filter_holds(make_key):
    partner = PartnerFactory(name="acme")
    employer_a, employer_b = EmployerFactory(partner=partner), EmployerFactory(partner=partner)
    key_a = make_key(partner=partner, employers=[employer_a], scopes=[Scope.ENDORSEMENTS_READ])

    async def scenario() -> None:
        response = await open_stream(f"Api-Key {key_a.plaintext}", "/api/v1/events/stream?type=endorsement.sent")
        chunks = aiter(response.streaming_content)
        await chunks.__anext__()
        await sync_to_async(record)(partner.pk, employer_b.pk, STATUSES, oid="b-1")
        await sync_to_async(record)(partner.pk, employer_a.pk, STATUSES, oid="a-1")

        got = await frames(chunks, 1)
        assert [(f["event"], json.loads(f["data"])["employer"]) for f in got] == [("endorsement.sent", employer_a.pk)]
        assert await nothing_more(chunks)

    asyncio.run(scenario())


def test_bearer_token_opens_the_stream_too(make_bearer):
    partner = PartnerFactory(name="acme")
    employer = EmployerFactory(partner=partner)
    bearer = make_bearer(partner=partner, all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])

    async def scenario() -> None:
        response = await open_stream(f"Bearer {bearer.token}")
        chunks = aiter(response.streaming_content)
        await chunks.__anext__()
        await sync_to_async(record)(partner.pk, employer.pk, STATUSES[:1])
        assert [f["event"] for f in await frames(chunks, 1)] == STATUSES[:1]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("case", "status"),
    [
        ("no_credentials", 401),
        ("bad_token", 401),
        ("unknown_type", 422),
        ("unreadable_type", 403),
        ("foreign_employer", 404),
        ("bad_employer", 422),
        ("unknown_last_event_id", 422),
        ("unknown_parameter", 422),
    ],
)
def test_refusals_are_problem_json(make_key, case, status):
    partner = PartnerFactory(name="acme")
    foreign = EmployerFactory(partner=PartnerFactory(name="other"))
    key = make_key(partner=partner, all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])
    credentials, path, headers = f"Api-Key {key.plaintext}", "/api/v1/events/stream", {}
    if case == "no_credentials":
        credentials = ""
    elif case == "bad_token":
        credentials = "Bearer nope"
    elif case == "unknown_type":
        path += "?type=endorsement.nope"
    elif case == "unreadable_type":
        path += "?type=ledger.topup_posted"
    elif case == "foreign_employer":
        path += f"?employer={foreign.pk}"
    elif case == "bad_employer":
        path += "?employer=x"
    elif case == "unknown_last_event_id":
        headers = {"Last-Event-ID": "evt_nope"}
    elif case == "unknown_parameter":
        path += "?type=endorsement.active&foo=bar"

    async def scenario():
        return await open_stream(credentials, path, **headers)

    response = asyncio.run(scenario())

    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/problem+json"
    assert hub_module.hub.subscriber_count() == 0
    # Past authentication the rate limiter counted the request: its headers are on the refusal too (SPEC §2).
    assert ("RateLimit-Limit" in response) is (status not in (401,))


@pytest.mark.parametrize("query", ["type=,", "type=%20,%20", "type=endorsement.active,,endorsement.sent"])
def test_an_empty_item_in_the_type_list_is_422_never_every_type(make_key, query):
    """Newcomer trial: `?type=,` split into nothing and opened a stream of every readable type, where `?type=`
    was refused and the list refuses `?type=,`."""
    partner = PartnerFactory(name="acme")
    key = make_key(partner=partner, all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])

    response = asyncio.run(open_stream(f"Api-Key {key.plaintext}", f"/api/v1/events/stream?{query}"))

    assert response.status_code == 422, response.content
    assert json.loads(response.content)["errors"] == [{"pointer": "/type", "detail": EMPTY_PARAMETER_MESSAGE}]
    assert hub_module.hub.subscriber_count() == 0


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete", "head", "options"])
@pytest.mark.parametrize("credentials", ["key", "none"])
def test_another_method_than_get_is_a_405_problem_naming_get(make_key, method, credentials):
    """Not CSRF's 403: the stream is an API address authenticated by header (trial finding)."""
    key = make_key(partner=PartnerFactory(name="acme"), all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])
    headers = {"Authorization": f"Api-Key {key.plaintext}"} if credentials == "key" else {}

    async def scenario():
        return await getattr(AsyncClient(enforce_csrf_checks=True), method)("/api/v1/events/stream", headers=headers)

    response = asyncio.run(scenario())

    assert (response.status_code, response["Allow"], response["Content-Type"]) == (
        405,
        "GET",
        "application/problem+json",
    )
    assert hub_module.hub.subscriber_count() == 0


def test_the_stream_response_carries_the_rate_limit_headers(make_key):
    key = make_key(partner=PartnerFactory(name="acme"), all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])

    async def scenario():
        response = await open_stream(f"Api-Key {key.plaintext}")
        chunks = aiter(response.streaming_content)
        await chunks.__anext__()
        await chunks.aclose()
        return response

    response = asyncio.run(scenario())

    assert response.status_code == 200
    assert {"RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "RateLimit-Policy"} <= set(response.headers)


@pytest.mark.parametrize(
    ("headers", "query", "pointer", "detail"),
    [
        ({}, "?last_event_id=evt_%00nul", "/last_event_id", "Must not contain control characters."),
        ({}, "?last_event_id=" + "x" * 10_000, "/last_event_id", "no event with this id is visible to this caller"),
        ({"Last-Event-ID": "evt_nope"}, "?last_event_id=evt_also", "/Last-Event-ID", "no event with this id"),
    ],
)
def test_a_bad_resume_id_is_a_422_naming_the_header_or_parameter_used(make_key, headers, query, pointer, detail):
    # Given a partner's key, when it opens its stream resuming after an id that is bad, huge or unknown
    key = make_key(partner=PartnerFactory(name="acme"), all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])
    response = asyncio.run(open_stream(f"Api-Key {key.plaintext}", "/api/v1/events/stream" + query, **headers))

    # Then a 422 names where the id came from (the header wins over the parameter), and no stream was opened
    assert response.status_code == 422, response.content
    [error] = response.json()["errors"]
    assert error["pointer"] == pointer
    assert error["detail"].startswith(detail)
    assert hub_module.hub.subscriber_count() == 0


def test_on_postgresql_a_notify_wakes_the_reader_long_before_its_safety_poll(make_key, settings):
    settings.EVENT_STREAM_SAFETY_POLL_SECONDS = 60.0  # only the sequencer's NOTIFY can deliver within the wait
    partner = PartnerFactory(name="acme")
    key = make_key(partner=partner, all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])

    async def scenario() -> None:
        response = await open_stream(f"Api-Key {key.plaintext}")
        chunks = aiter(response.streaming_content)
        await chunks.__anext__()
        await asyncio.sleep(0.3)  # the reader is past its first read, waiting on LISTEN
        await sync_to_async(record)(partner.pk, None, STATUSES[:1])
        assert [f["event"] for f in await frames(chunks, 1, timeout=3.0)] == STATUSES[:1]

    asyncio.run(scenario())


def test_idle_streams_get_heartbeats_from_one_ticker_per_event_loop(make_key, settings):
    from apps.live import streaming

    settings.EVENT_STREAM_HEARTBEAT_SECONDS = 0.3
    partner = PartnerFactory(name="acme")
    keys = [make_key(partner=partner, all_employers=True, scopes=[Scope.ENDORSEMENTS_READ]) for _ in range(3)]

    async def until_heartbeat(chunks: AsyncIterator[bytes]) -> bytes:
        while (chunk := await chunks.__anext__()) != b": heartbeat\n\n":
            assert chunk.startswith((b"retry:", b": live")), chunk  # nothing but the opening lines before it
        return chunk

    async def scenario() -> None:
        responses = [await open_stream(f"Api-Key {key.plaintext}") for key in keys]
        streams = [aiter(r.streaming_content) for r in responses]
        got = await asyncio.wait_for(asyncio.gather(*(until_heartbeat(s) for s in streams)), 5.0)
        assert got == [b": heartbeat\n\n"] * 3
        ticker = streaming._tickers[asyncio.get_running_loop()]
        assert len(ticker.streams) == 3
        assert ticker.task is not None
        assert not ticker.task.done()

    asyncio.run(scenario())


def test_an_open_stream_ends_once_its_key_is_revoked_and_sends_nothing_after(make_key, monkeypatch):
    """Issue 15/16: a revoked key gets nothing after 5 s — an open stream included. The loop's ticker asks each
    stream's credentials again every `AUTH_RECHECK_SECONDS` (0.2 s here), off the send path, and a stream whose
    key was revoked ends; the client's reconnect meets the 401. Without the sweep the stream never ends."""
    from apps.common.actors import Actor
    from apps.live import streaming
    from apps.partners.services import api_key_revoke

    monkeypatch.setattr(streaming, "AUTH_RECHECK_SECONDS", 0.2, raising=False)
    partner = PartnerFactory(name="acme")
    employer = EmployerFactory(partner=partner)
    key = make_key(partner=partner, all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])

    async def scenario() -> None:
        response = await open_stream(f"Api-Key {key.plaintext}")
        chunks = aiter(response.streaming_content)
        await chunks.__anext__()
        await sync_to_async(record)(partner.pk, employer.pk, STATUSES[:1])
        assert [f["event"] for f in await frames(chunks, 1)] == STATUSES[:1]

        await sync_to_async(api_key_revoke)(prefix=key.api_key.prefix, actor=Actor.system("tests"))
        rest = b""
        async with asyncio.timeout(10):
            async for chunk in chunks:  # ends: the generator returns instead of waiting for more
                rest += chunk
        assert b"id:" not in rest
        assert hub_module.hub.subscriber_count() == 0
        again = await open_stream(f"Api-Key {key.plaintext}")
        assert again.status_code == 401

    asyncio.run(scenario())


def test_the_credential_sweep_asks_each_credential_once_and_a_failing_check_ends_nothing():
    """The ticker's sweep asks a credential shared by several streams once, ends exactly the streams whose
    credential said no (waking them), and treats a check that raises (database away) as yes."""
    from apps.live import streaming
    from apps.live.hub import Subscription

    asked: list[str] = []

    def check(name: str, answer: bool | None) -> bool:
        asked.append(name)
        if answer is None:
            raise ConnectionError("database away")
        return answer

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        ticker = streaming._HeartbeatTicker()
        plan = {"good": True, "revoked": False, "broken": None}
        subs = {
            (name, n): Subscription(
                partner_id=1,
                types=frozenset({"x"}),
                employer_ids=None,
                loop=loop,
                authorised=lambda name=name: check(name, plan[name]),
                credential=name,
            )
            for name in plan
            for n in range(2)
        }
        ticker.streams.update(subs.values())
        await ticker._sweep()
        assert sorted(asked) == ["broken", "good", "revoked"]
        ended = {key for key, sub in subs.items() if sub.ended}
        assert ended == {("revoked", 0), ("revoked", 1)}
        assert [subs["revoked", n].queue.get_nowait() for n in range(2)] == [None, None]
        assert all(subs[name, n].queue.empty() for name in ("good", "broken") for n in range(2))

    asyncio.run(scenario())


def test_a_sweep_asks_every_streams_credential_in_one_query_per_door_and_refuses_the_revoked_at_once(
    make_key, make_bearer, django_assert_num_queries
):
    """ADR 0067: the sweep's cost does not grow with the streams — keys and OAuth clients are asked in one query
    per door, building no model — and it reads the database itself, not the principal cache: a key revoked
    behind the cache's back (no invalidation reaches this process) is refused by the next sweep. A revoked key or
    client, an expired key and an inactive partner are refused; the valid ones, bound to employers or not, are
    not."""
    from datetime import timedelta

    from django.utils import timezone

    from apps.common.actors import Actor
    from apps.live import views
    from apps.oauth.services import oauth_client_revoke
    from apps.partners.models import APIKey
    from apps.partners.services import api_key_revoke

    partner, quiet = PartnerFactory(name="acme"), PartnerFactory(name="quiet")
    employers = [EmployerFactory(partner=partner) for _ in range(2)]
    good = [make_key(partner=partner, all_employers=True, scopes=[Scope.ENDORSEMENTS_READ]) for _ in range(3)]
    good += [make_key(partner=partner, employers=employers, scopes=[Scope.ENDORSEMENTS_READ]) for _ in range(3)]
    bearers = [
        make_bearer(partner=partner, employers=employers[:1], scopes=[Scope.ENDORSEMENTS_READ]) for _ in range(2)
    ]
    revoked = make_key(partner=partner, all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])
    api_key_revoke(prefix=revoked.api_key.prefix, actor=Actor.system("tests"))
    expired = make_key(partner=partner, all_employers=True, expires_at=timezone.now() + timedelta(seconds=1))
    APIKey.objects.filter(pk=expired.api_key.pk).update(expiry_date=timezone.now() - timedelta(days=1))
    inactive = make_key(partner=quiet, all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])
    type(quiet).objects.filter(pk=quiet.pk).update(is_active=False)
    revoked_bearer = make_bearer(partner=partner, all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])
    oauth_client_revoke(client_id=revoked_bearer.oauth_client.client_id, actor=Actor.system("tests"))

    usable = {k.api_key.prefix for k in good} | {f"oauth:{b.oauth_client.client_id}" for b in bearers}
    unusable = {k.api_key.prefix for k in (revoked, expired, inactive)}
    unusable |= {f"oauth:{revoked_bearer.oauth_client.client_id}", "unknown1", "oauth:unknown"}
    assert views._principals_still_valid(set()) == set()
    with django_assert_num_queries(2):
        assert views._principals_still_valid(usable | unusable) == usable

    behind_the_cache = good[0].api_key.prefix
    assert good[0].get("/api/v1/endorsements").status_code == 200  # now in this process's principal cache
    APIKey.objects.filter(prefix=behind_the_cache).update(revoked=True, revoked_at=timezone.now())
    assert views._principals_still_valid(usable) == usable - {behind_the_cache}


def test_a_sweep_ends_the_streams_of_a_refused_kind_and_by_the_clock_and_a_failing_kind_ends_nothing():
    """The ticker's sweep calls each `still_valid` once with all its streams' keys, ends exactly the streams whose
    key it left out (waking them), ends a stream past its `valid_until` without asking anyone, and a `still_valid`
    that raises (database away) ends none of its streams. A stream that opens while the sweep is asking is left
    to the next sweep (its key was not asked; the bench's 500 streams opening found this)."""
    import time

    from apps.live import streaming
    from apps.live.hub import Subscription

    asked: list[tuple[str, set]] = []

    opening: list = []  # (ticker, subscription) to add while the sweep asks: a stream opening meanwhile

    def door(name: str, answer: set | None):
        def still_valid(keys: set) -> set:
            for ticker, subscription in opening:
                ticker.streams.add(subscription)
            asked.append((name, set(keys)))
            if answer is None:
                raise ConnectionError("database away")
            return answer & keys

        return still_valid

    working, broken = door("working", {"good"}), door("broken", None)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        ticker = streaming._HeartbeatTicker()
        plan = {
            "good": (working, None),
            "revoked": (working, None),
            "expired": (working, time.time() - 1),
            "expiring-later": (working, time.time() + 60),
            "unchecked": (broken, None),
        }
        subs = {
            (key, n): Subscription(
                partner_id=1,
                types=frozenset({"x"}),
                employer_ids=None,
                loop=loop,
                still_valid=(still_valid, "good" if key == "expiring-later" else key),
                valid_until=until,
            )
            for key, (still_valid, until) in plan.items()
            for n in range(2)
        }
        ticker.streams.update(subs.values())
        late = Subscription(partner_id=1, types=frozenset({"x"}), employer_ids=None, loop=loop)
        late.still_valid = (working, "opened-during-the-sweep")
        opening.append((ticker, late))
        await ticker._sweep()
        assert sorted(asked) == [("broken", {"unchecked"}), ("working", {"good", "revoked"})]
        assert late in ticker.streams
        assert not late.ended
        ended = {key for key, sub in subs.items() if sub.ended}
        assert ended == {("revoked", 0), ("revoked", 1), ("expired", 0), ("expired", 1)}
        assert [subs[key, n].queue.get_nowait() for key in ("revoked", "expired") for n in range(2)] == [None] * 4
        assert all(subs[key, n].queue.empty() for key in ("good", "expiring-later", "unchecked") for n in range(2))

    asyncio.run(scenario())


def test_a_bearer_stream_ends_when_its_token_expires(make_bearer, monkeypatch):
    """A stream opened with an access token ends once the token expires (its `exp` plus the clock leeway), as its
    reconnect would then meet the 401 — by the sweep's clock, with the client still valid."""
    import time

    from django.conf import settings

    from apps.live import streaming

    monkeypatch.setattr(streaming, "AUTH_RECHECK_SECONDS", 0.2, raising=False)
    partner = PartnerFactory(name="acme")
    bearer = make_bearer(partner=partner, all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])
    lifetime = settings.OAUTH_ACCESS_TOKEN_TTL_SECONDS + settings.OAUTH_CLOCK_LEEWAY_SECONDS
    started = time.time()

    async def scenario() -> None:
        response = await open_stream(f"Bearer {bearer.token}")
        assert response.status_code == 200
        chunks = aiter(response.streaming_content)
        await chunks.__anext__()
        await asyncio.sleep(0.5)  # two sweeps: the token still valid, the stream goes on
        assert hub_module.hub.subscriber_count() == 1
        monkeypatch.setattr(streaming, "wall_clock", lambda: started + lifetime + 5)
        rest = b""
        async with asyncio.timeout(10):
            async for chunk in chunks:
                rest += chunk
        assert b"id:" not in rest
        assert hub_module.hub.subscriber_count() == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("query", "status", "detail"),
    [
        ("type=ledger.topup_posted", 403, "This API key lacks the `ledger:read` scope."),
        ("type=endorsement.active&type=loan_application.decided", 403, "This API key lacks the `loans:read` scope."),
        ("employer={sibling}", 404, "No employer with this id."),
        ("employer={foreign}", 404, "No employer with this id."),
        ("employer=999999999", 404, "No employer with this id."),
        ("foo=bar", 422, "Unknown parameter: this operation takes no such query parameter."),
        ("type=endorsement.nope", 422, choices_message(EventType.values)),
    ],
)
def test_the_events_list_answers_a_filter_as_the_stream_does(make_key, query, status, detail):
    """ADR 0064: one rule for both readers of events — a type the key may not read is 403 naming the scope, an
    employer it may not act for 404; the list no longer answers an empty 200 where the stream refuses."""
    partner = PartnerFactory(name="acme")
    mine, sibling = EmployerFactory(partner=partner), EmployerFactory(partner=partner)
    foreign = EmployerFactory(partner=PartnerFactory(name="other"))
    key = make_key(partner=partner, employers=[mine], scopes=[Scope.ENDORSEMENTS_READ])
    query = query.format(sibling=sibling.pk, foreign=foreign.pk)

    listed = key.get(f"/api/v1/events?{query}")
    streamed = asyncio.run(open_stream(f"Api-Key {key.plaintext}", f"/api/v1/events/stream?{query}"))

    assert (listed.status_code, streamed.status_code) == (status, status), (listed.content, streamed.content)
    assert listed["Content-Type"] == streamed["Content-Type"] == "application/problem+json"
    if detail is not None:
        answers = [listed.json(), json.loads(streamed.content)]
        assert [a.get("errors", [{}])[0].get("detail", a["detail"]) for a in answers] == [detail, detail]
    assert hub_module.hub.subscriber_count() == 0


@pytest.mark.parametrize("object_type", sorted(EventObjectType.values))
def test_an_object_type_the_key_may_not_read_is_403_as_a_type_is(make_key, object_type):
    """`object_type` is judged like `type`: a key without the read scope of that object's events is 403 naming
    the scope (not an empty page); with it, 200. Generated from `EventObjectType`."""
    partner = PartnerFactory(name="acme")
    key = make_key(partner=partner, all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])
    scope = READ_SCOPE_OF_OBJECT_TYPE[object_type]

    response = key.get(f"/api/v1/events?object_type={object_type}")

    if scope == Scope.ENDORSEMENTS_READ:
        assert response.status_code == 200, response.content
    else:
        assert response.status_code == 403, response.content
        assert response.json()["detail"] == f"This API key lacks the `{scope}` scope."


def test_the_events_list_takes_the_employers_and_types_the_key_may_read(make_key):
    partner = PartnerFactory(name="acme")
    mine = EmployerFactory(partner=partner)
    key = make_key(partner=partner, employers=[mine], scopes=[Scope.ENDORSEMENTS_READ])
    record(partner.pk, mine.pk, STATUSES[:1])

    response = key.get(f"/api/v1/events?employer={mine.pk}&type={STATUSES[0]}")

    assert response.status_code == 200, response.content
    assert [e["type"] for e in response.json()["results"]] == STATUSES[:1]
