"""Query parameters are checked like bodies (ADR 0064), on every operation, generated from the OpenAPI schema.

The tables are built at collection time from the schema drf-spectacular generates from the real views, the same
schema whose operations are the allow-list (`apps.common.query`), so an operation or filter added tomorrow is
walked without a new line here:

- every operation (reads and writes; the stream has its own test) refuses `?not_a_param=x` — 422, one `errors`
  entry naming it, nothing written — where the same GET without it is 200;
- every declared boolean, date/date-time and enum query parameter refuses a value that does not parse (422
  naming it, nothing written): a boolean takes exactly `true`/`false`.
"""

from __future__ import annotations

from typing import Any

import pytest
import test_input_kinds as kinds

from apps.common.serializers import BOOLEAN_MESSAGE, choices_message
from apps.common.testing import row_counts
from apps.common.text import EMPTY_PARAMETER_MESSAGE, UNKNOWN_PARAMETER_MESSAGE
from apps.live.schema import STREAM_PATH

pytestmark = pytest.mark.django_db

# The world of the body and parameter tables (a key for every scope, an employer, a policy, a webhook endpoint).
world = kinds.world
PROBLEM, SCHEMA = kinds.PROBLEM, kinds.SCHEMA
_discrepancy, _reconciliation_run = kinds._discrepancy, kinds._reconciliation_run

# Not a partner operation: insurers post signed results here (their own authentication and format, ADR 0044).
NOT_PARTNER_OPERATIONS = {("post", "/api/v1/insurer-callbacks/{insurer_code}")}
UNKNOWN = "not_a_param"


def _url(world: dict, path: str) -> tuple[str, bool]:
    """`path` with its parameters filled from the world: (url, whether each names a real object)."""
    real = True
    ids = {
        "/api/v1/employers/{id}": lambda: world["employer"].pk,
        "/api/v1/policies/{id}": lambda: world["policy"].pk,
        "/api/v1/webhook-endpoints/{id}": lambda: world["webhook_endpoint"],
        "/api/v1/reconciliations/{id}": lambda: _reconciliation_run(world),
        "/api/v1/discrepancies/{id}": lambda: _discrepancy(world),
        "/api/v1/insurers/{code}": lambda: world["policy"].insurer.code,
    }
    for prefix, value in ids.items():
        head = prefix.split("{")[0]
        if path.startswith(prefix):
            path = path.replace(prefix, head + str(value()), 1)
    if "{" in path:  # an object the world does not hold: the refusal comes before any lookup
        real = False
        uuid = "00000000-0000-4000-8000-000000000001"
        path = path.replace("loan-applications/{id}", f"loan-applications/{uuid}")
        path = path.replace("{id}", "1").replace("{public_id}", "evt_0")
    return path, real


def _required(world: dict, path: str) -> dict[str, str]:
    """A valid value for each required query parameter of the GET operation at `path`."""
    operation = SCHEMA["paths"][path].get("get") or {}
    required = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query" and p.get("required")]
    assert set(required) <= {"employer"}, required  # the world knows how to fill these only
    return {name: str(world["employer"].pk) for name in required}


def _unknown_cases() -> list[tuple[str, str]]:
    return sorted(
        (method, path)
        for path, operations in SCHEMA["paths"].items()
        for method in operations
        if method in ("get", "post", "put", "patch", "delete")
        and path != STREAM_PATH
        and (method, path) not in NOT_PARTNER_OPERATIONS
    )


UNKNOWN_CASES = _unknown_cases()


def _list_operations() -> set[str]:
    """GET operations answering a page (`results`) or taking query parameters."""
    paths = set()
    for path, operations in SCHEMA["paths"].items():
        operation = operations.get("get")
        if operation is None:
            continue
        content = operation.get("responses", {}).get("200", {}).get("content", {})
        ref = content.get("application/json", {}).get("schema", {}).get("$ref", "")
        if ref.rsplit("/", 1)[-1].startswith("Paginated") or any(
            p["in"] == "query" for p in operation.get("parameters", [])
        ):
            paths.add(path)
    return paths


def test_the_unknown_parameter_table_covers_every_list_and_every_operation():
    lists = _list_operations()
    walked = {path for method, path in UNKNOWN_CASES if method == "get"}

    assert len(lists) >= 15
    assert lists - {STREAM_PATH} <= walked
    assert {
        "/api/v1/reconciliations/{id}/discrepancies",
        "/api/v1/events",
        "/api/v1/reconciliations",
        "/api/v1/webhook-endpoints",
        "/api/v1/webhook-endpoints/{id}/attempts",
        "/api/v1/ledger/entries",
        "/api/v1/analytics/endorsements",
    } <= walked
    every = {(m, p) for p, ops in SCHEMA["paths"].items() for m in ops if m in ("get", "post", "patch", "delete")}
    assert every - set(UNKNOWN_CASES) == NOT_PARTNER_OPERATIONS | {("get", STREAM_PATH)}


def assert_refused(response, name: str, detail: str | None = None) -> None:
    """422 problem+json whose `errors` are exactly one entry, on `/<name>` (with `detail` when given)."""
    assert response.status_code == 422, (name, response.status_code, response.content[:300])
    assert response["Content-Type"] == PROBLEM
    errors = response.json()["errors"]
    assert [e["pointer"] for e in errors] == [f"/{name}"], errors
    if detail is not None:
        assert errors[0]["detail"] == detail


@pytest.mark.parametrize(("method", "path"), UNKNOWN_CASES, ids=[f"{m.upper()} {p}" for m, p in UNKNOWN_CASES])
def test_a_query_parameter_the_operation_does_not_take_is_422_naming_it_and_changes_nothing(world, method, path):
    url, real = _url(world, path)
    query = _required(world, path) if method == "get" else {}
    client = world["client"]
    if method == "get" and real:  # the control: without the stray parameter the same request is answered
        assert client.get(url, query).status_code == 200, url
    before = row_counts()
    stray = "&".join(f"{k}={v}" for k, v in {**query, UNKNOWN: "x"}.items())

    response = getattr(client, method)(f"{url}?{stray}")

    assert_refused(response, UNKNOWN, UNKNOWN_PARAMETER_MESSAGE)
    assert row_counts() == before


def test_every_unknown_parameter_is_named_and_a_documented_one_is_not(world):
    response = world["client"].get("/api/v1/employers?status=active&foo=1&employers=2&limit=5")

    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"pointer": "/foo", "detail": UNKNOWN_PARAMETER_MESSAGE},
        {"pointer": "/employers", "detail": UNKNOWN_PARAMETER_MESSAGE},
    ]


def test_a_filter_of_another_list_is_not_taken_here(world):
    run = _reconciliation_run(world)

    response = world["client"].get(f"/api/v1/reconciliations/{run}/discrepancies?employee_code=X-1")

    assert_refused(response, "employee_code", UNKNOWN_PARAMETER_MESSAGE)


def test_a_detail_operation_takes_no_page_parameters(world):
    response = world["client"].get(f"/api/v1/employers/{world['employer'].pk}?limit=5")

    assert_refused(response, "limit", UNKNOWN_PARAMETER_MESSAGE)


@pytest.mark.django_db(transaction=True)
def test_the_stream_refuses_a_parameter_it_does_not_take(world):
    response = world["client"].get(f"{STREAM_PATH}?type=ledger.topup_posted&foo=bar")

    assert_refused(response, "foo", UNKNOWN_PARAMETER_MESSAGE)


STREAM_PARAMETERS = sorted(
    p["name"] for p in SCHEMA["paths"][STREAM_PATH]["get"].get("parameters", []) if p["in"] == "query"
)


@pytest.mark.parametrize("name", STREAM_PARAMETERS)
def test_the_stream_refuses_an_empty_value_as_the_lists_do(world, name):
    """Newcomer trial 3: `?type=` held the stream open, unfiltered, while the list answered 422."""
    assert STREAM_PARAMETERS  # the table walks the stream's documented parameters
    response = world["client"].get(f"{STREAM_PATH}?{name}=")

    assert_refused(response, name, EMPTY_PARAMETER_MESSAGE)


# --- values that do not parse -----------------------------------------------------------------------------

BAD_BOOLEANS = ["maybe", "True", "FALSE", "1", "0", "yes", "on", ""]
BAD_DATES = ["notadate", "2026-13-45", "2026-02-30", "10000-01-01", "a\u0000b"]


def _value_cases() -> list[tuple[str, str, str, Any]]:
    """(path, parameter, kind, bad value) for every boolean, date, date-time and enum query parameter."""
    cases = []
    for path, operations in SCHEMA["paths"].items():
        for parameter in (operations.get("get") or {}).get("parameters", []):
            if parameter["in"] != "query":
                continue
            name, schema = parameter["name"], parameter["schema"]
            items = schema.get("items", {}) if schema.get("type") == "array" else schema
            if schema.get("type") == "boolean":
                cases += [(path, name, "boolean", v) for v in BAD_BOOLEANS]
            elif schema.get("format") in ("date", "date-time"):
                cases += [(path, name, schema["format"], v) for v in BAD_DATES]
            elif "enum" in items:
                cases += [(path, name, "enum", v) for v in ("nope-not-a-value", "ACTIVE ", "")]
    # An empty value of any parameter is its own case (`EMPTY_CASES`): refused before any filter parses it.
    return [c for c in cases if c[3] != ""]


VALUE_CASES = _value_cases()


def _empty_cases() -> list[tuple[str, str]]:
    """(path, parameter) for every query parameter every GET operation documents (the stream parses its own)."""
    return sorted(
        (path, parameter["name"])
        for path, operations in SCHEMA["paths"].items()
        if path != STREAM_PATH
        for parameter in (operations.get("get") or {}).get("parameters", [])
        if parameter["in"] == "query"
    )


EMPTY_CASES = _empty_cases()


def test_the_empty_value_table_walks_the_filters_the_trial_found_unfiltered():
    assert {
        ("/api/v1/endorsements", "employer"),
        ("/api/v1/endorsements", "status"),
        ("/api/v1/events", "employer"),
        ("/api/v1/events", "after"),
        ("/api/v1/analytics/endorsements", "employer"),
        ("/api/v1/ledger/entries", "since"),
        ("/api/v1/coverages", "policy"),
    } <= set(EMPTY_CASES)


@pytest.mark.parametrize(("path", "name"), EMPTY_CASES, ids=[f"{p} {n}=" for p, n in EMPTY_CASES])
def test_an_empty_query_value_is_422_naming_it_never_an_unfiltered_page(world, path, name):
    """Newcomer trial: `?employer=` (a script's unset variable) answered every employer's rows."""
    url, _ = _url(world, path)
    query = {**_required(world, path), name: ""}
    before = row_counts()

    response = world["client"].get(url, query)

    assert_refused(response, name, EMPTY_PARAMETER_MESSAGE)
    assert row_counts() == before


SYNC_VALUE_CASES = [c for c in VALUE_CASES if c[0] != STREAM_PATH]


def test_the_value_table_walks_every_boolean_date_and_enum_parameter():
    walked = {(path, name, kind) for path, name, kind, _ in VALUE_CASES}

    assert {
        ("/api/v1/webhook-endpoints", "is_active", "boolean"),
        ("/api/v1/webhook-endpoints/{id}/attempts", "succeeded", "boolean"),
        ("/api/v1/events", "created_after", "date-time"),
        ("/api/v1/events", "type", "enum"),
        ("/api/v1/reconciliations", "status", "enum"),
        ("/api/v1/analytics/endorsements", "from", "date"),
        ("/api/v1/ledger/entries", "since", "date-time"),
        ("/api/v1/loan-applications", "loan_type", "enum"),
    } <= walked
    assert (STREAM_PATH, "type", "enum") in walked


@pytest.mark.parametrize(
    ("path", "name", "kind", "value"),
    SYNC_VALUE_CASES,
    ids=[f"{p} {n}={v!r}" for p, n, _, v in SYNC_VALUE_CASES],
)
def test_a_query_value_that_does_not_parse_is_422_naming_it_and_changes_nothing(world, path, name, kind, value):
    url, _ = _url(world, path)
    query = {**_required(world, path), name: value}
    before = row_counts()

    response = world["client"].get(url, query)

    assert_refused(response, name, BOOLEAN_MESSAGE if kind == "boolean" else None)
    if kind == "enum":  # the refusal lists the values the schema documents (in the enum's order), not the one sent
        detail = response.json()["errors"][0]["detail"]
        listed = detail.removeprefix("Must be one of: ").removesuffix(".").split(", ")
        assert (detail, sorted(listed)) == (choices_message(listed), sorted(_enum_of(path, name)))
    assert row_counts() == before


def _enum_of(path: str, name: str) -> list[str]:
    """The values the schema documents for the enum query parameter `name` of the GET at `path`."""
    for parameter in SCHEMA["paths"][path]["get"]["parameters"]:
        if parameter["in"] == "query" and parameter["name"] == name:
            schema = parameter["schema"]
            return (schema.get("items", {}) if schema.get("type") == "array" else schema)["enum"]
    raise AssertionError((path, name))


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [("/api/v1/webhook-endpoints", "is_active", v) for v in ("true", "false")]
    + [("/api/v1/webhook-endpoints/{id}/attempts", "succeeded", v) for v in ("true", "false")],
)
def test_a_boolean_filter_takes_true_and_false(world, path, name, value):
    url, _ = _url(world, path)

    response = world["client"].get(url, {name: value})

    assert response.status_code == 200, response.content[:300]


def test_the_allow_list_of_every_operation_is_exactly_its_documented_query_parameters():
    """The rule's one source (ADR 0064): what a view accepts is what the published schema lists for it."""
    from django.urls import resolve

    from apps.common.query import documented_query_parameters

    compared = 0
    for method, path in UNKNOWN_CASES:
        url = path.replace("{id}", "00000000-0000-4000-8000-000000000001" if "loan-applications" in path else "1")
        url = url.replace("{public_id}", "evt_0").replace("{code}", "sandbox-rest")
        view_class = resolve(url).func.cls
        documented = {p["name"] for p in SCHEMA["paths"][path][method].get("parameters", []) if p["in"] == "query"}

        assert documented_query_parameters(view_class, method.upper()) == documented, (method, path)
        compared += 1
    assert compared == len(UNKNOWN_CASES) > 40


def test_a_head_request_takes_the_parameters_of_its_get(world):
    client = world["client"]

    assert client.head("/api/v1/employers?status=active&limit=1").status_code == 200
    assert client.head("/api/v1/employers?foo=1").status_code == 422
