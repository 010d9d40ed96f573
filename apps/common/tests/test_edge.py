"""The API edge (ADR 0015; issue 8 kinds 12 and 13): request ids, one error format, body limits per endpoint."""

from __future__ import annotations

import io
import json
import re
import uuid

import pytest
from django.test import Client

from apps.common.testing import row_counts
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
MiB = 1_048_576
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.content[:500]
    assert response["Content-Type"] == PROBLEM
    body = json.loads(response.content)
    assert body["status"] == status
    assert set(body) >= {"type", "title", "status", "detail", "instance", "request_id"}
    assert body["request_id"] == response["X-Request-ID"]
    assert "Traceback" not in response.content.decode()
    if response.has_header("Content-Length"):  # set by CommonMiddleware before the request id was added
        assert response["Content-Length"] == str(len(response.content))
    return body


@pytest.fixture
def platform(make_key):
    return make_key(partner=PartnerFactory(name="edge"), all_employers=True)


# --- X-Request-ID -------------------------------------------------------------------------------------


@pytest.mark.parametrize("sent", ["abc-123", "0b9f6f2e-5f0e-4a55-9d3c-7d0c2f0d6a11", "Root=1-5f84c7a5:trace/x+y"])
def test_a_valid_client_request_id_is_kept_on_success_and_in_problem_bodies(platform, sent):
    ok = platform.get("/api/v1/employers", HTTP_X_REQUEST_ID=sent)
    missing = platform.get("/api/v1/no-such-thing", HTTP_X_REQUEST_ID=sent)

    assert ok.status_code == 200
    assert ok["X-Request-ID"] == sent
    assert assert_problem(missing, 404)["request_id"] == sent


@pytest.mark.parametrize("sent", ["", " ", "a b", "x" * 129, "a\x01b", "<script>", "-leading-dash", "é"])
def test_an_invalid_client_request_id_is_replaced_by_a_fresh_one(platform, sent):
    response = platform.get("/api/v1/employers", HTTP_X_REQUEST_ID=sent)

    assert UUID_RE.fullmatch(response["X-Request-ID"])
    assert response["X-Request-ID"] != sent


@pytest.mark.parametrize("path", ["/api/v1/employers", "/health", "/api/schema/", "/admin/login/", "/nowhere"])
def test_every_response_carries_a_request_id_and_each_request_its_own(path):
    client = Client()
    first, second = client.get(path), client.get(path)

    assert UUID_RE.fullmatch(first["X-Request-ID"])
    assert UUID_RE.fullmatch(second["X-Request-ID"])
    assert first["X-Request-ID"] != second["X-Request-ID"]


@pytest.mark.urls("apps.common.tests.urls_edge")
@pytest.mark.parametrize("sent", [None, "trace-42", "bad id"])
def test_the_logs_carry_the_request_id_the_client_sees(sent):
    extra = {} if sent is None else {"HTTP_X_REQUEST_ID": sent}

    response = Client().get("/api/v1/_edge/whoami", **extra)

    assert response.content.decode() == response["X-Request-ID"]
    if sent == "trace-42":
        assert response["X-Request-ID"] == sent


# --- one error format -----------------------------------------------------------------------------------


@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("path", ["/api/v1/no-such-thing", "/api/v1/employers/", "/api/v2/employers", "/api/"])
def test_router_404s_under_api_are_problem_json_even_in_debug(settings, debug, path, platform):
    settings.DEBUG = debug

    body = assert_problem(platform.get(path), 404)

    assert body["instance"] == path


def test_non_api_pages_keep_django_html_errors():
    response = Client().get("/admin-nowhere")

    assert response.status_code == 404
    assert not response["Content-Type"].startswith(PROBLEM)


@pytest.mark.urls("apps.common.tests.urls_edge")
@pytest.mark.parametrize("debug", [False, True])
@pytest.mark.parametrize("path", ["/api/v1/_edge/boom", "/api/v1/_edge/drf-bug"])
def test_a_500_anywhere_under_api_is_problem_json_without_a_traceback(settings, debug, path):
    settings.DEBUG = debug

    body = assert_problem(Client(raise_request_exception=False).get(path), 500)

    assert body["detail"] == "An unexpected error occurred."
    assert "a bug" not in json.dumps(body)


@pytest.mark.urls("apps.common.tests.urls_edge")
def test_database_unavailable_is_503_problem_json_with_retry_after():
    response = Client().get("/api/v1/_edge/db-down")

    body = assert_problem(response, 503)
    assert response["Retry-After"] == "5"
    assert body["type"].endswith("/service-unavailable")


@pytest.mark.urls("apps.common.tests.urls_edge")
def test_a_405_from_a_plain_django_view_is_problem_json_and_keeps_allow():
    response = Client().get("/api/v1/_edge/post-only")

    assert_problem(response, 405)
    assert response["Allow"] == "POST"


def test_a_405_from_drf_is_problem_json_and_keeps_allow(platform):
    response = platform.delete("/api/v1/employers")

    assert_problem(response, 405)
    assert set(response["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}


def test_401_is_problem_json_with_request_id():
    assert_problem(Client().get("/api/v1/employers"), 401)


# --- body limits ----------------------------------------------------------------------------------------


def _multipart(size: int) -> tuple[bytes, str]:
    boundary = "keel-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="name"\r\n\r\nGlobex\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="external_ref"\r\n\r\nGLX\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    return body + b"x" * (size - len(body) - len(tail)) + tail, f"multipart/form-data; boundary={boundary}"


def _json_of_size(size: int) -> bytes:
    head = b'{"name": "Globex", "external_ref": "GLX", "padding": "'
    return head + b"x" * (size - len(head) - 2) + b'"}'


@pytest.mark.parametrize(
    ("method", "path", "size", "kind"),
    [
        ("post", "/api/v1/employers", 5_000_000, "multipart"),  # the example: was 201
        ("post", "/api/v1/employers", MiB + 1, "multipart"),
        ("post", "/api/v1/employers", MiB + 1, "json"),
        ("post", "/api/v1/ledger/topups", MiB + 1, "json"),
        ("post", "/api/v1/loan-applications", 2 * MiB, "text"),
        ("post", "/api/v1/endorsements", MiB + 1, "json"),
        ("post", "/api/v1/endorsements/quote", MiB + 1, "json"),
        ("patch", "/api/v1/employers/1", MiB + 1, "json"),
        ("delete", "/api/v1/endorsement-batches/1", MiB + 1, "json"),  # only POST gets the upload limit
        ("post", "/api/v1/endorsement-batches", 20 * MiB + 1, "json"),
        ("post", "/api/v1/endorsement-batches", 20 * MiB + 1, "multipart"),
        ("post", "/api/v1/insurer-callbacks/sandbox-rest", MiB + 1, "json"),
    ],
)
def test_bodies_over_their_endpoints_limit_are_413_and_write_nothing(platform, method, path, size, kind):
    if kind == "multipart":
        body, content_type = _multipart(size)
    elif kind == "json":
        body, content_type = _json_of_size(size), "application/json"
    else:
        body, content_type = b"x" * size, "text/plain"
    assert len(body) == size
    before = row_counts()

    response = getattr(platform.client, method)(path, body, content_type=content_type)

    problem = assert_problem(response, 413)
    assert problem["max_bytes"] == (20 * MiB if path == "/api/v1/endorsement-batches" else MiB)
    assert row_counts() == before


@pytest.mark.parametrize("kind", ["json", "multipart"])
def test_the_batch_endpoint_accepts_bodies_above_one_mib(platform, kind):
    if kind == "json":
        body, content_type = _json_of_size(5 * MiB), "application/json"
    else:
        body, content_type = _multipart(5 * MiB)

    response = platform.client.post("/api/v1/endorsement-batches", body, content_type=content_type)

    # Past the size check: the body is read and judged on its content (an employer's fields, which a batch does
    # not take, named first).
    body = assert_problem(response, 422)
    assert {e["pointer"] for e in body["errors"]} == (
        {"/name", "/external_ref", "/padding"} if kind == "json" else {"/name", "/external_ref"}
    )


def _chunked(client, path: str, body: bytes, *, terminated: bool = True):
    extra = {
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": io.BytesIO(body),
    }
    if terminated:
        extra["wsgi.input_terminated"] = True
    return client.generic("POST", path, b"", content_type="application/json", **extra)


def test_a_chunked_body_within_the_limit_is_read(platform):
    response = _chunked(
        platform.client, "/api/v1/employers", json.dumps({"name": "Chunky", "external_ref": "C-1"}).encode()
    )

    assert response.status_code == 201, response.content
    assert response.json()["name"] == "Chunky"


def test_a_chunked_body_over_the_limit_is_413_and_writes_nothing(platform):
    before = row_counts()

    response = _chunked(platform.client, "/api/v1/employers", _json_of_size(MiB + 1))

    assert_problem(response, 413)
    assert row_counts() == before


def test_a_chunked_body_the_server_cannot_terminate_is_411(platform):
    response = _chunked(platform.client, "/api/v1/employers", b"{}", terminated=False)

    assert_problem(response, 411)


def test_a_malformed_content_length_is_400(platform):
    response = platform.client.generic("POST", "/api/v1/employers", b"{}", "application/json", CONTENT_LENGTH="12abc")

    assert_problem(response, 400)


def test_request_id_of_a_413_matches_the_header(platform):
    sent = str(uuid.uuid4())
    response = platform.client.post(
        "/api/v1/employers", _json_of_size(MiB + 1), content_type="application/json", HTTP_X_REQUEST_ID=sent
    )

    assert assert_problem(response, 413)["request_id"] == sent


def test_a_problem_body_is_as_long_as_its_content_length(platform):
    """Clients stop reading at Content-Length: the request id added to a problem body must be counted (a newcomer
    trial read truncated JSON from every 4xx under runserver)."""
    for response in (
        platform.get("/api/v1/no-such-thing"),
        platform.post("/api/v1/employers", {"name": ""}),
        Client().get("/api/v1/employers"),
    ):
        assert response.status_code in (401, 404, 422)
        assert response["Content-Length"] == str(len(response.content))


@pytest.mark.parametrize("member", ["type", "title", "status", "detail", "instance", "errors", "request_id"])
def test_a_problem_extension_may_not_overwrite_a_standard_member(member):
    """RFC 9457 §3.1: `status` is the HTTP status code; an extension named like it is a programming error."""
    from apps.common.errors import Conflict, problem_body

    with pytest.raises(ValueError, match=member):
        Conflict("x", extra={member: "COMPLETED"})
    with pytest.raises(ValueError, match=member):
        problem_body(status_code=409, detail="x", instance=None, extra={member: "COMPLETED"})
