"""Request bodies under the ASGI server `make run`, the Procfile and the image use (ADR 0050, ADR 0065): chunked
bodies are read, and no body is read past its endpoint's limit — through a real uvicorn on a local socket, and
through the handler itself for every operation that takes a body."""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Iterator
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator

from apps.common.asgi import MAX_REQUEST_TARGET_BYTES, BodyLimitASGIHandler
from apps.common.testing import row_counts, uvicorn_in_thread
from apps.employers.models import Employer
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db
# uvicorn's threads write with their own connections: those tests commit for real.
committing = pytest.mark.django_db(transaction=True)

MiB = 1_048_576
PROBLEM = "application/problem+json"
UPLOAD = ("post", "/api/v1/endorsement-batches")
_SCHEMA = SchemaGenerator().get_schema(request=None, public=True)
#: Every operation that takes a body (as `tests/test_input_kinds.py` walks them), from the OpenAPI schema.
BODY_OPERATIONS = sorted(
    (method, path)
    for path, operations in _SCHEMA["paths"].items()
    for method, operation in operations.items()
    if method in ("post", "put", "patch", "delete") and ("requestBody" in operation or method == "delete")
)


def _limit(method: str, path: str) -> int:
    return 20 * MiB if (method, path) == UPLOAD else MiB


@pytest.fixture
def asgi_base() -> Iterator[tuple[str, int]]:
    """The app under uvicorn as `config.asgi` serves it (`BodyLimitASGIHandler`), in a thread of this process so
    it sees the test database; its (host, port)."""
    with uvicorn_in_thread(BodyLimitASGIHandler()) as port:
        yield "127.0.0.1", port


def _send_chunked(
    address: tuple[str, int], path: str, chunks: Iterator[bytes], headers: dict[str, str]
) -> tuple[http.client.HTTPResponse, dict[str, Any] | None]:
    """POST `chunks` with `Transfer-Encoding: chunked` (http.client frames each chunk); the response and its
    JSON body. A server that answers before the body ends may close the socket under the sender: the response
    is read all the same."""
    connection = http.client.HTTPConnection(*address, timeout=30)
    connection.putrequest("POST", path)
    for name, value in {"Content-Type": "application/json", "Transfer-Encoding": "chunked", **headers}.items():
        connection.putheader(name, value)
    connection.endheaders()
    try:
        for chunk in chunks:
            connection.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        connection.send(b"0\r\n\r\n")
    except (BrokenPipeError, ConnectionResetError):
        pass
    response = connection.getresponse()
    content = response.read()
    connection.close()
    return response, json.loads(content) if content else None


def _pieces(data: bytes, size: int = 1000) -> Iterator[bytes]:
    return (data[i : i + size] for i in range(0, len(data), size))


@committing
def test_a_chunked_body_under_uvicorn_is_read_and_the_row_written(asgi_base, make_key):
    key = make_key(partner=PartnerFactory(name="asgi"), all_employers=True)
    body = json.dumps({"name": "Chunked Co", "external_ref": "CH-1"}).encode()

    response, document = _send_chunked(asgi_base, "/api/v1/employers", _pieces(body, 7), _auth(key))

    assert response.status == 201, document
    assert document is not None
    assert document["name"] == "Chunked Co"
    assert list(Employer.objects.values_list("name", "external_ref")) == [("Chunked Co", "CH-1")]


@committing
def test_a_chunked_body_over_the_limit_under_uvicorn_is_413_closes_and_writes_nothing(asgi_base, make_key):
    key = make_key(partner=PartnerFactory(name="asgi"), all_employers=True)
    padding = b"x" * (MiB + 1 - len(b'{"name": "Big", "external_ref": "B-1", "padding": ""}'))
    body = b'{"name": "Big", "external_ref": "B-1", "padding": "' + padding + b'"}'
    assert len(body) == MiB + 1
    before = row_counts()

    response, document = _send_chunked(asgi_base, "/api/v1/employers", _pieces(body, 64 * 1024), _auth(key))

    assert response.status == 413
    assert response.getheader("Content-Type") == PROBLEM
    assert response.getheader("Connection") == "close"
    assert document is not None
    assert document["max_bytes"] == MiB
    assert document["detail"] == (
        f"The request body (sent without a length) is longer than allowed; this endpoint accepts at most {MiB} bytes."
    )
    assert document["request_id"] == response.getheader("X-Request-ID")
    assert row_counts() == before


@committing
def test_a_chunked_body_just_within_the_limit_under_uvicorn_passes_the_size_check(asgi_base, make_key):
    key = make_key(partner=PartnerFactory(name="asgi"), all_employers=True)
    prefix = b'{"name": "Edge", "external_ref": "E-1", "padding": "'
    body = prefix + b"x" * (MiB - len(prefix) - 2) + b'"}'
    assert len(body) == MiB
    before = row_counts()

    response, document = _send_chunked(asgi_base, "/api/v1/employers", _pieces(body, 64 * 1024), _auth(key))

    # Read whole and judged on its content: the field the endpoint does not take is named.
    assert response.status == 422, document
    assert document is not None
    assert [e["pointer"] for e in document["errors"]] == ["/padding"]
    assert row_counts() == before


def _auth(key) -> dict[str, str]:
    return {"Authorization": f"Api-Key {key.plaintext}"}


# --- the handler, for every operation that takes a body -------------------------------------------------------


def _run(
    method: str,
    path: str,
    messages: Iterator[dict[str, Any]],
    headers: list[tuple[bytes, bytes]],
    query_string: bytes = b"",
) -> tuple[int, dict[bytes, bytes], bytes, int]:
    """Call `BodyLimitASGIHandler` with the body `messages` (as a server hands them over, de-chunked); the status,
    response headers, response body, and how many body bytes the handler took from the server."""
    taken = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal taken
        await asyncio.sleep(0)
        message = next(messages, None)
        if message is None:
            await asyncio.Event().wait()  # the client stays connected until the response is sent
        assert message is not None
        taken += len(message["body"])
        return message

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method.upper(),
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query_string,
        "headers": [(b"host", b"testserver"), (b"content-type", b"application/json"), *headers],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    # An unbounded read of the endless body never ends: bounded in time so such a handler fails the test.
    asyncio.run(asyncio.wait_for(BodyLimitASGIHandler()(scope, receive, send), timeout=60))
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], dict(start["headers"]), body, taken


def _endless(chunk: int = 64 * 1024) -> Iterator[dict[str, Any]]:
    while True:
        yield {"type": "http.request", "body": b"x" * chunk, "more_body": True}


def _url(path: str) -> str:
    return path.replace("{id}", "1").replace("{insurer_code}", "sandbox-rest")


@pytest.mark.parametrize(("method", "path"), BODY_OPERATIONS)
def test_an_endless_chunked_body_is_413_after_at_most_its_limit_on_every_body_operation(method, path):
    limit = _limit(method, path)
    before = row_counts()

    status, headers, body, taken = _run(method, _url(path), _endless(), [(b"transfer-encoding", b"chunked")])

    assert status == 413, body[:300]
    assert headers[b"Content-Type"] == PROBLEM.encode()
    assert headers[b"connection"] == b"close"
    assert json.loads(body)["max_bytes"] == limit
    # Taken up to the message that passed the limit, and not one more.
    assert taken == (limit // (64 * 1024) + 1) * 64 * 1024
    assert row_counts() == before


@pytest.mark.parametrize(("method", "path"), BODY_OPERATIONS)
def test_a_declared_body_over_the_limit_is_413_with_nothing_read_on_every_body_operation(method, path):
    limit = _limit(method, path)
    before = row_counts()

    status, headers, body, taken = _run(method, _url(path), _endless(), [(b"content-length", str(limit + 1).encode())])

    assert status == 413, body[:300]
    assert json.loads(body)["detail"] == (
        f"The request body is {limit + 1} bytes; this endpoint accepts at most {limit} bytes."
    )
    assert headers[b"connection"] == b"close"
    assert taken == 0
    assert row_counts() == before


#: Every operation of the schema (any method), for the bound on the request target.
ALL_OPERATIONS = sorted(
    (method, path)
    for path, operations in _SCHEMA["paths"].items()
    for method in operations
    if method in ("get", "post", "put", "patch", "delete")
)


@pytest.mark.parametrize(("method", "path"), ALL_OPERATIONS)
def test_a_request_target_over_the_bound_is_414_before_anything_is_read_on_every_operation(method, path):
    """Newcomer trial: a 40 KB query string held the web process for 12 s (its request log line). Past
    `MAX_REQUEST_TARGET_BYTES` the handler answers 414 problem+json itself: no body read, no request built."""
    url = _url(path)
    query = b"x=" + b"a" * (MAX_REQUEST_TARGET_BYTES - len(url) - 1)  # one byte over
    before = row_counts()

    status, headers, body, taken = _run(method, url, _endless(), [(b"content-length", b"10")], query_string=query)

    assert status == 414, body[:300]
    assert headers[b"content-type"] == PROBLEM.encode()
    assert headers[b"connection"] == b"close"
    assert json.loads(body) == {
        "type": "https://keel.example/problems/uri-too-long",
        "title": "URI Too Long",
        "status": 414,
        "detail": f"The request target is longer than {MAX_REQUEST_TARGET_BYTES} bytes; send long values in a "
        "request body.",
        "instance": url,
    }
    assert taken == 0
    assert row_counts() == before


def test_a_request_target_at_the_bound_is_served_and_outside_the_api_over_it_is_a_plain_414():
    at_bound = b"x=" + b"a" * (MAX_REQUEST_TARGET_BYTES - len("/health") - 2)
    status, _, _, _ = _run("get", "/health", iter([{"type": "http.request", "body": b""}]), [], query_string=at_bound)
    assert status == 200

    over = at_bound + b"a"
    status, headers, body, taken = _run("get", "/admin/login/", _endless(), [], query_string=over)
    assert (status, body, taken) == (414, b"414 URI too long", 0)
    assert headers[b"connection"] == b"close"


def test_the_body_operations_table_holds_the_upload_endpoint_and_the_others():
    assert {UPLOAD, ("post", "/api/v1/employers"), ("post", "/api/v1/endorsements")} <= set(BODY_OPERATIONS)


def test_a_body_outside_the_api_over_djangos_limit_is_a_plain_413_and_not_read_on(settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000

    status, headers, body, taken = _run("post", "/admin/login/", _endless(600), [(b"transfer-encoding", b"chunked")])

    assert (status, body) == (413, b"413 Payload too large")
    assert headers[b"connection"] == b"close"
    assert taken == 1200  # the second message passed the limit; the handler took no third


def test_the_asgi_entry_point_serves_the_bounded_handler():
    """`config.asgi` (what uvicorn and gunicorn load) — imported in a child process, whose garbage collector it
    freezes."""
    import os
    import subprocess
    import sys

    script = "import config.asgi as a; print(type(a.application).__module__, type(a.application).__name__)"
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.test"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["apps.common.asgi", "BodyLimitASGIHandler"]
