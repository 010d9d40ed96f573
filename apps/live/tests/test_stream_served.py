"""The live stream as the ASGI server serves it (`BodyLimitASGIHandler` under a real uvicorn, ADR 0069): Django
answers the opening — middleware headers, rate limit, refusals — and the handler sends the rest of the stream after
Django has finished the request, so an open stream holds no thread of its own and ends when its client leaves."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from apps.common.asgi import BodyLimitASGIHandler
from apps.common.middleware import REQUEST_ID_HEADER
from apps.common.testing import uvicorn_in_thread
from apps.employers.tests.factories import EmployerFactory
from apps.live import hub as hub_module
from apps.live.tests.test_stream import STATUSES, record
from apps.partners.contracts import Scope
from apps.partners.tests.factories import PartnerFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("fresh_hub")]

STREAM = "/api/v1/events/stream"


@pytest.fixture
def port() -> Iterator[int]:
    with uvicorn_in_thread(BodyLimitASGIHandler()) as served_port:
        yield served_port


def open_stream(port: int, key: str, query: str = "") -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", STREAM + query, headers={"Authorization": f"Api-Key {key}"})
    return connection, connection.getresponse()


def read_until(response: http.client.HTTPResponse, done: Callable[[list[str]], bool]) -> list[str]:
    """The stream's lines (blank ones dropped) until `done(lines)` holds; fails on the socket timeout."""
    lines: list[str] = []
    while not done(lines):
        line = response.readline()
        assert line, f"the stream ended early after {lines}"
        if text := line.decode().rstrip("\r\n"):
            lines.append(text)
    return lines


def live(response: http.client.HTTPResponse) -> list[str]:
    return read_until(response, lambda lines: ": live" in lines)


def eventually(condition: Callable[[], bool], seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_the_opening_carries_the_middleware_headers_and_events_follow_in_order(port, make_key):
    partner = PartnerFactory(name="acme")
    employer = EmployerFactory(partner=partner)
    key = make_key(partner=partner, all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])
    other = make_key(partner=PartnerFactory(name="other"), all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])

    connection, response = open_stream(port, key.plaintext)
    other_connection, other_response = open_stream(port, other.plaintext)
    try:
        assert response.status == 200
        assert response.getheader("Content-Type") == "text/event-stream"
        assert response.getheader("Cache-Control") == "no-cache"
        assert response.getheader(REQUEST_ID_HEADER)
        assert response.getheader("RateLimit-Limit")
        assert response.getheader("X-Content-Type-Options") == "nosniff"
        assert live(response) == ["retry: 2000", ": connected", ": live"]
        live(other_response)

        record(partner.pk, employer.pk, STATUSES)
        lines = read_until(response, lambda lines: sum(line.startswith("data: ") for line in lines) == len(STATUSES))
        assert [line.removeprefix("event: ") for line in lines if line.startswith("event: ")] == STATUSES
        data = [json.loads(line.removeprefix("data: ")) for line in lines if line.startswith("data: ")]
        assert [event["type"] for event in data] == STATUSES
        assert {event["object"]["id"] for event in data} == {"e-1"}

        other_connection.sock.settimeout(0.6)  # the other partner's stream: nothing of it (blank lines end frames)
        with pytest.raises(TimeoutError):
            while other_response.readline() == b"\n":
                pass
    finally:
        connection.close()
        other_connection.close()


def test_open_streams_keep_no_django_request_or_thread_and_a_client_that_leaves_is_unsubscribed_at_once(
    port, make_key, settings
):
    """Served inside Django's handler, each open stream kept its Django request (and, before ADR 0071, a thread) for
    its whole life. Handed over (ADR 0069), 40 open streams keep no `ASGIRequest` alive and add fewer threads than
    streams; a client that closes its socket is unsubscribed without waiting for a heartbeat (60 s here) to find
    the socket gone. Without the hand-over (`continuation_slot` answering None) 40 requests stay alive."""
    import gc

    from django.core.handlers.asgi import ASGIRequest

    def live_requests() -> int:
        gc.collect()
        return sum(type(o) is ASGIRequest for o in gc.get_objects())  # type(): no weak proxy is dereferenced

    settings.EVENT_STREAM_HEARTBEAT_SECONDS = 60
    partner = PartnerFactory(name="acme")
    key = make_key(partner=partner, all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])
    count = 40
    before = threading.active_count()
    streams = [open_stream(port, key.plaintext) for _ in range(count)]
    try:
        for _connection, response in streams:
            assert response.status == 200
            live(response)
        assert hub_module.hub.subscriber_count() == count
        assert threading.active_count() - before < count
        assert live_requests() == 0
    finally:
        for connection, _response in streams:
            connection.close()
    assert eventually(lambda: hub_module.hub.subscriber_count() == 0)


def test_a_stream_whose_key_is_revoked_ends_with_the_last_chunk(port, make_key, monkeypatch):
    from apps.common.actors import Actor
    from apps.live import streaming
    from apps.partners.services import api_key_revoke

    monkeypatch.setattr(streaming, "AUTH_RECHECK_SECONDS", 0.2)
    key = make_key(partner=PartnerFactory(name="acme"), all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])
    connection, response = open_stream(port, key.plaintext)
    try:
        live(response)
        api_key_revoke(prefix=key.api_key.prefix, actor=Actor.system("tests"))
        rest = response.read()  # returns once the chunked body's last chunk arrives
        assert b"id:" not in rest
        assert eventually(lambda: hub_module.hub.subscriber_count() == 0)
    finally:
        connection.close()
    again_connection, again = open_stream(port, key.plaintext)
    assert again.status == 401
    again_connection.close()


@pytest.mark.parametrize(
    ("query", "status"),
    [("?type=nope", 422), ("?type=ledger.low_balance", 403), ("?employer=999999", 404), ("?colour=red", 422)],
)
def test_a_refused_stream_is_a_whole_problem_response_and_subscribes_nothing(port, make_key, query, status):
    key = make_key(partner=PartnerFactory(name="acme"), all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])
    connection, response = open_stream(port, key.plaintext, query)
    try:
        assert response.status == status
        assert response.getheader("Content-Type") == "application/problem+json"
        assert json.loads(response.read())["status"] == status
        assert hub_module.hub.subscriber_count() == 0
    finally:
        connection.close()


def test_a_burst_of_openings_whose_replays_wait_leaves_the_api_its_request_threads(make_key, settings, monkeypatch):
    """Newcomer trial, 2026-12-02: the stream views were async, so each opening held a request thread while its
    checks waited for the event loop's default executor — full of other streams' replays. 40 openings whose replays
    block: with 2 request threads, a plain API request must still be answered. Now the opening runs on the request
    thread and returns; the replay runs on the loop's executor, holding no request thread."""
    import threading

    from apps.live import views

    settings.WEB_REQUEST_THREADS = 2
    release = threading.Event()
    real_backlog = views._backlog

    def slow_backlog(stream, after):
        release.wait(30)
        return real_backlog(stream, after)

    monkeypatch.setattr(views, "_backlog", slow_backlog)
    key = make_key(partner=PartnerFactory(name="acme"), all_employers=True, scopes=[Scope.ENDORSEMENTS_READ])
    with uvicorn_in_thread(BodyLimitASGIHandler()) as served_port:
        streams = []
        try:
            for _ in range(40):
                streams.append(open_stream(served_port, key.plaintext))
                assert streams[-1][1].status == 200
            api = http.client.HTTPConnection("127.0.0.1", served_port, timeout=10)
            api.request("GET", "/api/v1/events", headers={"Authorization": f"Api-Key {key.plaintext}"})
            answer = api.getresponse()
            assert answer.status == 200
            assert json.loads(answer.read())["results"] == []
            api.close()
        finally:
            release.set()
            for connection, _response in streams:
                connection.close()
