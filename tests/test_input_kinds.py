"""Bad input of every kind, on every field of every endpoint, generated from the OpenAPI schema (issue 8 part A).

The tables below are built at collection time from the schema drf-spectacular generates from the real views
and serializers, so a field or endpoint added tomorrow is walked without a new line here:

- kind 1 — integers beyond the bigint range and decimals beyond their digits, in bodies (422 on the field),
  query parameters (422 on the parameter; a positive `limit` of any size is a page of at most 500) and paths (404);
- kind 2 — every money field (the schema `pattern` is `MONEY_PATTERN`) refuses every other spelling (ADR 0014);
- kind 3 — every writable text field refuses control characters, and a number or boolean in its place; every
  boolean field takes only JSON `true`/`false` (not "yes", 1, "on", "true");
- kind 5 — every e-mail field refuses `x@localhost`, `a@b.c` and `dev..sen@example.com`.

Each rejection asserts the exact status, the field's JSON pointer, and that **nothing was written** (row counts
of every Keel table: no domain row, outbox event, audit event, ledger entry or idempotency record). Bodies parsed
outside DRF serializers (endorsements and batches: `apps/endorsements/parsing.py`; signed insurer callbacks) are
listed in `PARSED_ELSEWHERE` and walked by their own tests; their `employer`/`policy` ids are walked here.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import pytest
from django.utils import timezone
from drf_spectacular.generators import SchemaGenerator

from apps.common.fields import RATE_PATTERN
from apps.common.money import MONEY_PATTERN
from apps.common.serializers import BOOLEAN_MESSAGE, READ_ONLY_FIELD_MESSAGE
from apps.common.testing import row_counts
from apps.common.text import CONTROL_CHARACTER_MESSAGE, UNKNOWN_FIELD_MESSAGE
from apps.employers.models import Employer
from apps.endorsements.tests.factories import PolicyFactory, addition, correction, deletion
from apps.loan_applications.tests.factories import LoanApplicationPayloadFactory
from apps.partners.tests.webhook_helpers import resolver_stub

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"
SCHEMA = SchemaGenerator().get_schema(request=None, public=True)
WRITE_METHODS = ("post", "put", "patch")

# Operations whose JSON body is not validated by a DRF serializer; their own tests walk them.
PARSED_ELSEWHERE = {
    ("post", "/api/v1/endorsements"): "apps/endorsements/parsing.py (issue 8 part B)",
    ("post", "/api/v1/endorsements/quote"): "apps/endorsements/parsing.py (issue 8 part B)",
    ("post", "/api/v1/endorsement-batches"): "apps/endorsements/parsing.py (issue 8 part B)",
    ("post", "/api/v1/insurer-callbacks/{insurer_code}"): "signed insurer callbacks (issue 8 part C)",
}

BAD_INTEGERS = [2**63, 10**30, -(2**63) - 1, "1e30", 1.5, True]
BAD_DECIMALS = ["1e30", "9" * 27, "1" + "0" * 30 + ".5", "NaN", "Infinity", "-Infinity"]
BAD_MONEY = [
    "1_000",
    "1e3",
    "1E3",
    "1,000",
    " 100",
    "100 ",
    "1.234",
    "-1",
    "+1",
    "01",
    ".5",
    "5.",
    "0x10",
    "\u0661\u0660\u0660",  # Arabic-Indic digits: int() would accept them
    "1" * 16,
    1.5,
    True,
    None,
]
BAD_TEXT = ["Ra\u0000vi", "a\u0001b", "tab\there", "new\nline", "a\u007fb", "a\u0085b", "a\u009fb"]
BAD_BOOLEANS = ["yes", "on", "true", "false", "1", "0", 1, 0, "", None]
BAD_EMAILS = ["x@localhost", "a@b.c", "dev..sen@example.com", "x@localhost.", "@example.com", "a@"]
BAD_EMAILS.append("a" * 65 + "@example.com")  # RFC 5321: a local part holds at most 64 octets
# A rate per mille has four places: "1.234" is a rate; the rest of the money table is not.
BAD_RATES = [v for v in BAD_MONEY if v != "1.234"] + ["1.23456", "1234567", "\u0664"]


# --- the fixtures every base body needs -----------------------------------------------------------------


@pytest.fixture
def world(make_key, time_machine):
    time_machine.move_to(timezone.make_aware(timezone.datetime(2026, 6, 1, 10, 0)), tick=False)
    # An endpoint, so that `POST /reconciliations` accepts the insurer (its roster can be pulled).
    policy = PolicyFactory(insurer__endpoint="http://127.0.0.1:9/sandbox/sandbox-rest")
    employer = policy.employer
    client = make_key(partner=employer.partner, all_employers=True)
    with resolver_stub(WEBHOOK_DNS):  # webhook URLs are resolved at registration; no traffic leaves the test
        created = client.post("/api/v1/webhook-endpoints", {"url": WEBHOOK_URL, "event_types": ["ledger.topup_posted"]})
        assert created.status_code == 201, created.content
        yield {"client": client, "employer": employer, "policy": policy, "webhook_endpoint": created.json()["id"]}


WEBHOOK_DNS = {"hooks.partner.example": ["93.184.215.14"]}
WEBHOOK_URL = "https://hooks.partner.example/in"


# A path's other parameters get a real object of the world, so only the parameter under test is bad.
def _reconciliation_run(world: dict) -> int:
    """A reconciliation run of the world's employer (started once per world)."""
    if "reconciliation_run" not in world:
        from apps.common.actors import Actor
        from apps.reconciliation.services import reconciliation_start

        policy = world["policy"]
        world["reconciliation_run"] = reconciliation_start(
            insurer_id=policy.insurer_id,
            employer_ids=[policy.employer_id],
            employer_id=policy.employer_id,
            policy_id=None,
            partner_id=policy.employer.partner_id,
            actor=Actor.system("tests"),
            queue=False,
        ).pk
    return world["reconciliation_run"]


def _discrepancy(world: dict) -> int:
    from apps.reconciliation.models import Discrepancy

    policy = world["policy"]
    return Discrepancy.objects.create(
        run_id=_reconciliation_run(world),
        employer=policy.employer,
        policy=policy,
        employee_code="E1",
        kind="missing_at_insurer",
        severity="high",
        key=f"member:E1:{Discrepancy.objects.count()}",
    ).pk


PATH_IDS: dict[str, Callable[[dict], Any]] = {
    "/api/v1/webhook-endpoints/{id}": lambda w: w["webhook_endpoint"],
    "/api/v1/reconciliations/{id}": _reconciliation_run,
}


def _loan_body(world: dict) -> dict:
    return dict(LoanApplicationPayloadFactory(pan_number="KLMNP4321Q"))


# (method, path template) → (path, a body the endpoint accepts). Every JSON-body operation outside
# PARSED_ELSEWHERE must be here: `test_every_writable_operation_is_in_the_table` holds it.
BASES: dict[tuple[str, str], Callable[[dict], tuple[str, dict]]] = {
    ("post", "/api/v1/employers"): lambda w: ("/api/v1/employers", {"name": "Globex", "external_ref": "GLX-9"}),
    ("patch", "/api/v1/employers/{id}"): lambda w: (f"/api/v1/employers/{w['employer'].pk}", {"name": "Renamed"}),
    ("post", "/api/v1/policies"): lambda w: (
        "/api/v1/policies",
        {
            "employer": w["employer"].pk,
            "insurer": w["policy"].insurer.code,
            "policy_number": "GMC-NEW-1",
            "start_date": "2026-04-01",
            "end_date": "2027-03-31",
            "premium_rate_per_mille": "4.5",
            "default_sum_insured": "500000.00",
        },
    ),
    ("post", "/api/v1/ledger/topups"): lambda w: (
        "/api/v1/ledger/topups",
        {"employer": w["employer"].pk, "amount": "2500.00", "reference": "NEFT-1"},
    ),
    ("post", "/api/v1/loan-applications"): lambda w: ("/api/v1/loan-applications", _loan_body(w)),
    ("post", "/api/v1/webhook-endpoints"): lambda w: (
        "/api/v1/webhook-endpoints",
        {"url": WEBHOOK_URL, "event_types": ["ledger.topup_posted"], "description": "HR sync"},
    ),
    ("patch", "/api/v1/webhook-endpoints/{id}"): lambda w: (
        f"/api/v1/webhook-endpoints/{w['webhook_endpoint']}",
        {"url": WEBHOOK_URL, "description": "HR sync"},
    ),
    ("post", "/api/v1/reconciliations"): lambda w: (
        "/api/v1/reconciliations",
        {"insurer": w["policy"].insurer.code, "employer": w["employer"].pk},
    ),
    ("post", "/api/v1/discrepancies/{id}/resolve"): lambda w: (
        f"/api/v1/discrepancies/{_discrepancy(w)}/resolve",
        {"action": "ignore", "note": "known"},
    ),
}


# --- walking the schema ---------------------------------------------------------------------------------


def _resolve(schema: dict) -> dict:
    while "$ref" in schema:
        schema = SCHEMA["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _resolve(schema["allOf"][0])
    if "oneOf" in schema:  # `allow_blank=True`: the field's schema or an empty string
        return _resolve(next(s for s in schema["oneOf"] if s.get("maxLength") != 0))
    return schema


def _fields(schema: dict, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict]]:
    """Every writable leaf field of a request schema, with its path (nested objects walked)."""
    schema = _resolve(schema)
    for name, prop in schema.get("properties", {}).items():
        prop = _resolve(prop)
        if prop.get("readOnly"):
            continue
        if prop.get("type") == "object" and "properties" in prop:
            yield from _fields(prop, (*path, name))
        else:
            yield (*path, name), prop


def _json_operations() -> Iterator[tuple[str, str, dict]]:
    for path, operations in SCHEMA["paths"].items():
        for method, operation in operations.items():
            content = operation.get("requestBody", {}).get("content", {})
            if method in WRITE_METHODS and "application/json" in content:
                yield method, path, content["application/json"]["schema"]


def _is_text(prop: dict) -> bool:
    return (
        prop.get("type") == "string"
        and "enum" not in prop
        and prop.get("format") not in ("date", "date-time", "decimal", "uuid", "binary", "uri")
    )


@dataclass(frozen=True)
class Case:
    method: str
    path: str
    field: tuple[str, ...]
    kind: str
    value: Any

    @property
    def id(self) -> str:
        return f"{self.method.upper()} {self.path} {'/'.join(self.field)} {self.kind} {self.value!r}"[:150]


def _body_cases() -> list[Case]:
    cases = []
    for method, path, schema in _json_operations():
        if (method, path) in PARSED_ELSEWHERE:
            continue
        for field, prop in _fields(schema):
            if prop.get("type") == "integer":
                cases += [Case(method, path, field, "kind1-integer", v) for v in BAD_INTEGERS]
            if prop.get("format") == "decimal":
                money = prop.get("pattern") == MONEY_PATTERN
                cases += [Case(method, path, field, "kind1-decimal", v) for v in BAD_DECIMALS]
                cases += [Case(method, path, field, "kind2-money", v) for v in BAD_MONEY if money]
                rate = prop.get("pattern") == RATE_PATTERN
                cases += [Case(method, path, field, "kind2-rate", v) for v in BAD_RATES if rate]
            if _is_text(prop):
                cases += [Case(method, path, field, "kind3-text", v) for v in BAD_TEXT]
                # A number or boolean where text belongs is refused, not coerced to "123" (apps/common/serializers).
                cases += [Case(method, path, field, "kind3-text-type", v) for v in (123, 1.5, True)]
            if prop.get("format") == "email":
                cases += [Case(method, path, field, "kind5-email", v) for v in BAD_EMAILS]
            if prop.get("type") == "boolean":
                # Only JSON true/false: DRF alone would read "yes", 1, "on" or "0" as a boolean.
                cases += [Case(method, path, field, "kind3-boolean", v) for v in BAD_BOOLEANS]
    return cases


def _response_fields(operation: dict) -> set[str]:
    """The top-level fields of an operation's 2xx JSON response (what the resource shows)."""
    for status, response in operation.get("responses", {}).items():
        schema = response.get("content", {}).get("application/json", {}).get("schema")
        if status.startswith("2") and schema:
            return set(_resolve(schema).get("properties", {}))
    return set()


def _shape_cases() -> list[Case]:
    """A field the body does not take (every operation), and each field the response shows but the request
    cannot set (read-only: `id`, `employers`, `secret`…): 422 naming it, never silently dropped."""
    cases = []
    for method, path, schema in _json_operations():
        if (method, path) in PARSED_ELSEWHERE:
            continue
        cases.append(Case(method, path, ("not_a_field",), "unknown-field", "x"))
        writable = set(_resolve(schema).get("properties", {}))
        shown = _response_fields(SCHEMA["paths"][path][method])
        cases += [Case(method, path, (name,), "read-only", "x") for name in sorted(shown - writable)]
    return cases


BODY_CASES = _body_cases() + _shape_cases()


def _set(body: dict, field: tuple[str, ...], value: Any) -> dict:
    body = json.loads(json.dumps(body))
    target = body
    for part in field[:-1]:
        target = target.setdefault(part, {})
    target[field[-1]] = value
    return body


def _employer_row(employer: Employer) -> dict:
    return Employer.objects.filter(pk=employer.pk).values().get()


def assert_422_on(response, pointer: str, message: str | None = None) -> None:
    assert response.status_code == 422, (pointer, response.status_code, response.content[:400])
    assert response["Content-Type"] == PROBLEM
    # The declared length is the body's (the request id is added after CommonMiddleware measured it).
    assert response["Content-Length"] == str(len(response.content))
    body = response.json()
    assert body["type"].endswith("/validation-error")
    details = [e["detail"] for e in body["errors"] if e["pointer"] == pointer]
    assert details, (pointer, body["errors"])
    if message is not None:
        assert message in details, (pointer, details)


# --- the tables -------------------------------------------------------------------------------------------


def test_the_tables_cover_every_kind_on_every_serializer_endpoint():
    kinds_by_operation: dict[tuple[str, str], set[str]] = {}
    for case in BODY_CASES:
        kinds_by_operation.setdefault((case.method, case.path), set()).add(case.kind)

    # The schema yields each kind where the endpoints have such fields (a table that came out empty would pass
    # vacuously); the exact sets document what each endpoint takes.
    assert kinds_by_operation == {
        ("post", "/api/v1/employers"): {
            "kind1-integer",
            "kind1-decimal",
            "kind2-money",
            "kind3-text",
            "kind3-text-type",
            "unknown-field",
            "read-only",
            "kind5-email",
        },
        ("patch", "/api/v1/employers/{id}"): {
            "kind1-integer",
            "kind1-decimal",
            "kind2-money",
            "kind3-text",
            "kind3-text-type",
            "unknown-field",
            "read-only",
            "kind5-email",
        },
        ("post", "/api/v1/policies"): {
            "kind1-integer",
            "kind1-decimal",
            "kind2-money",
            "kind2-rate",
            "kind3-text",
            "kind3-text-type",
            "unknown-field",
            "read-only",
        },
        ("post", "/api/v1/ledger/topups"): {
            "kind1-integer",
            "kind1-decimal",
            "kind2-money",
            "kind3-text",
            "kind3-text-type",
            "unknown-field",
            "read-only",
        },
        ("post", "/api/v1/loan-applications"): {
            "kind1-decimal",
            "kind3-boolean",
            "kind2-money",
            "kind3-text",
            "kind3-text-type",
            "unknown-field",
            "read-only",
            "kind5-email",
        },
        ("post", "/api/v1/webhook-endpoints"): {"kind3-text", "kind3-text-type", "unknown-field", "read-only"},
        ("patch", "/api/v1/webhook-endpoints/{id}"): {
            "kind3-boolean",
            "kind3-text",
            "kind3-text-type",
            "unknown-field",
            "read-only",
        },
        ("post", "/api/v1/reconciliations"): {
            "kind1-integer",
            "kind3-text",
            "kind3-text-type",
            "unknown-field",
            "read-only",
        },
        ("post", "/api/v1/discrepancies/{id}/resolve"): {"kind3-text", "kind3-text-type", "unknown-field", "read-only"},
    }


def test_every_writable_operation_is_in_the_table():
    operations = {(method, path) for method, path, _ in _json_operations()}

    assert operations == set(BASES) | set(PARSED_ELSEWHERE)


@pytest.mark.parametrize("operation", sorted(BASES))
def test_the_base_body_of_every_operation_is_accepted(world, operation):
    """The bodies the tables mutate are valid: each rejection below is caused by the one bad field."""
    path, body = BASES[operation](world)

    response = getattr(world["client"], operation[0])(path, body)

    assert 200 <= response.status_code < 300, response.content


@pytest.mark.parametrize("case", BODY_CASES, ids=lambda c: c.id)
def test_a_bad_value_in_any_body_field_is_422_on_that_field_and_writes_nothing(world, case):
    path, base = BASES[(case.method, case.path)](world)
    body = _set(base, case.field, case.value)
    before, employer_before = row_counts(), _employer_row(world["employer"])

    response = getattr(world["client"], case.method)(path, body)

    message = {
        "kind3-text": CONTROL_CHARACTER_MESSAGE,
        "unknown-field": UNKNOWN_FIELD_MESSAGE,
        "kind3-boolean": None if case.value is None else BOOLEAN_MESSAGE,
    }.get(case.kind)
    if case.kind == "read-only":  # an input serializer may not know the field at all: either message will do
        message = None
        details = [e["detail"] for e in response.json().get("errors", []) if e["pointer"] == f"/{case.field[0]}"]
        assert details in ([UNKNOWN_FIELD_MESSAGE], [READ_ONLY_FIELD_MESSAGE]), details
    assert_422_on(response, "/" + "/".join(case.field), message)
    assert row_counts() == before
    assert _employer_row(world["employer"]) == employer_before


# --- ids in endorsement bodies (parsed by part B's parser; the ids are resolved by the view) ---------------

ENDORSEMENT_ID_CASES = [
    (path, field, value)
    for path in ("/api/v1/endorsements", "/api/v1/endorsements/quote", "/api/v1/endorsement-batches")
    for field in ("employer", "policy")
    for value in [*BAD_INTEGERS, "12abc", 0, -1, None, [1]]
]


@pytest.mark.parametrize(("path", "field", "value"), ENDORSEMENT_ID_CASES)
def test_an_endorsement_id_out_of_range_is_422_on_that_field_and_writes_nothing(world, path, field, value):
    base = addition(world["policy"], "E-1", effective=date(2026, 6, 1))
    if path.endswith("batches"):
        base = {"employer": base.pop("employer"), "policy": base.pop("policy"), "rows": [base]}
    before = row_counts()

    response = world["client"].post(path, {**base, field: value})

    assert_422_on(response, f"/{field}")
    assert row_counts() == before


# --- query and path parameters ----------------------------------------------------------------------------


def _parameter_cases() -> list[tuple[str, str, str, Any, int]]:
    """(path template, parameter, where, value, expected status) for every GET parameter in the schema."""
    cases = []
    for path, operations in SCHEMA["paths"].items():
        operation = operations.get("get")
        if operation is None:
            continue
        for parameter in operation.get("parameters", []):
            name, where, schema = parameter["name"], parameter["in"], parameter["schema"]
            if where == "path":
                if schema.get("type") == "integer":
                    cases += [(path, name, where, v, 404) for v in (2**63, 10**30, 10**400)]
                continue
            if name == "limit":
                # A positive integer of any size asks for a page (at most 500 rows); anything else names `limit`.
                cases += [(path, name, where, v, 200) for v in (10**30, "9" * 5000, 501, 1)]
                cases += [(path, name, where, v, 422) for v in (-1, 0, "00", "abc", "1e3", "1.5", "", "a\u0000b")]
            elif name == "cursor":
                # Garbage, and well-formed cursors crafted with a position the ordering column cannot hold.
                crafted = [base64.b64encode(q.encode()).decode() for q in ("p=abc", "p=1e5", "r=1&p=abc", "p=1.5")]
                cases += [(path, name, where, v, 422) for v in ("a\u0000b", "not-a-cursor", "x" * 5000, *crafted)]
            elif schema.get("type") == "integer":
                # `after` is a position in commit order, where 0 (from the start) is valid; ids start at 1.
                floor = (-1,) if name == "after" else (0, -1)
                cases += [(path, name, where, v, 422) for v in (2**63, 10**30, "1e30", "1.5", "abc", *floor)]
            elif schema.get("format") == "date-time":
                cases += [(path, name, where, v, 422) for v in ("2026-13-45T00:00:00Z", "a\u0000b", "10000-01-01")]
            elif schema.get("type") == "string":
                cases += [(path, name, where, v, 422) for v in ("a\u0000b", "a\u0001b", "a\u007fb")]
                if "enum" in schema:  # a value outside the list is refused, not an empty page
                    cases.append((path, name, where, "nope-not-a-value", 422))
            elif schema.get("type") == "array" and "enum" in schema.get("items", {}):
                cases.append((path, name, where, "nope-not-a-value", 422))
    return cases


PARAMETER_CASES = _parameter_cases()


def test_the_parameter_table_walks_every_filter_and_path_id():
    walked = {(path, name) for path, name, *_ in PARAMETER_CASES}

    assert {
        ("/api/v1/employers/{id}", "id"),
        ("/api/v1/policies", "employer"),
        ("/api/v1/coverages", "policy"),
        ("/api/v1/endorsements", "batch"),
        ("/api/v1/ledger/balance", "employer"),
        ("/api/v1/employers", "external_ref"),
        ("/api/v1/loan-applications", "created_after"),
        ("/api/v1/endorsement-batches/{id}", "id"),
        ("/api/v1/reconciliations", "status"),
        ("/api/v1/reconciliations", "insurer"),
        ("/api/v1/reconciliations", "employer"),
        ("/api/v1/discrepancies/{id}", "id"),
    } <= walked


# The SSE stream is an async view: it reads the key from another thread, so its cases need committed rows.
STREAM_PATH = "/api/v1/events/stream"
STREAM_CASES = [c for c in PARAMETER_CASES if c[0] == STREAM_PATH and c[4] >= 400]  # a 2xx would stream forever
SYNC_CASES = [c for c in PARAMETER_CASES if c[0] != STREAM_PATH]


def _ids(cases: list) -> list[str]:
    return [f"{p} {n}={v!r}"[:120] for p, n, _, v, _ in cases]


@pytest.mark.parametrize(("path", "name", "where", "value", "expected"), SYNC_CASES, ids=_ids(SYNC_CASES))
def test_a_bad_query_or_path_parameter_is_a_4xx_naming_it(world, path, name, where, value, expected):
    _assert_parameter_refused(world, path, name, where, value, expected)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("path", "name", "where", "value", "expected"), STREAM_CASES, ids=_ids(STREAM_CASES))
def test_a_bad_stream_parameter_is_a_4xx_naming_it(world, path, name, where, value, expected):
    _assert_parameter_refused(world, path, name, where, value, expected)


def test_the_stream_parameters_are_walked():
    assert {name for _, name, *_ in STREAM_CASES} >= {"employer", "last_event_id"}


def _assert_parameter_refused(world, path, name, where, value, expected):
    url = path.replace("{" + name + "}", str(value)) if where == "path" else path
    for prefix, real_id in PATH_IDS.items():
        if url.startswith(prefix):
            url = url.replace(prefix, prefix.replace("{id}", str(real_id(world))), 1)
    query = {name: str(value)} if where == "query" else {}
    headers = {f"HTTP_{name.upper().replace('-', '_')}": str(value)} if where == "header" else {}
    # Required query parameters get a valid value when another one is the subject.
    if "ledger" in path and name != "employer":
        query["employer"] = str(world["employer"].pk)

    response = world["client"].get(url, query, **headers)

    assert response.status_code == expected, (url, query, response.content[:300])
    if expected == 422:
        assert_422_on(response, f"/{name}")
    elif expected >= 400:
        assert response["Content-Type"] == PROBLEM


# --- kind 3b: a single-valued query parameter given twice, on every GET operation -----------------------------


def _repeated_cases() -> list[tuple[str, str]]:
    """(path template, parameter) for every single-valued query parameter of every GET operation in the schema
    (array parameters — `?type=a&type=b` — take several values by design)."""
    return sorted(
        (path, parameter["name"])
        for path, operations in SCHEMA["paths"].items()
        for parameter in (operations.get("get") or {}).get("parameters", [])
        if parameter["in"] == "query" and parameter["schema"].get("type") != "array"
    )


REPEATED_CASES = _repeated_cases()


def test_the_repeated_parameter_table_walks_every_single_valued_filter():
    assert {
        ("/api/v1/analytics/endorsements", "employer"),
        ("/api/v1/events", "object_type"),
        ("/api/v1/endorsements", "status"),
        ("/api/v1/reconciliations", "insurer"),
        ("/api/v1/events/stream", "employer"),
    } <= set(REPEATED_CASES)
    assert ("/api/v1/events", "type") not in REPEATED_CASES


@pytest.mark.parametrize(("path", "name"), [c for c in REPEATED_CASES if c[0] != STREAM_PATH])
def test_a_single_valued_parameter_given_twice_is_a_422_naming_it(world, path, name):
    url = path
    for prefix, real_id in PATH_IDS.items():
        if url.startswith(prefix):
            url = url.replace(prefix, prefix.replace("{id}", str(real_id(world))), 1)
    query = f"{name}=1&{name}=2"
    if "ledger" in path and name != "employer":
        query += f"&employer={world['employer'].pk}"

    response = world["client"].get(f"{url}?{query}")

    assert_422_on(response, f"/{name}", "Give this parameter once: it takes a single value.")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("name", sorted(n for p, n in REPEATED_CASES if p == STREAM_PATH))
def test_a_single_valued_stream_parameter_given_twice_is_a_422_naming_it(world, name):
    response = world["client"].get(f"{STREAM_PATH}?{name}=1&{name}=2")

    assert_422_on(response, f"/{name}", "Give this parameter once: it takes a single value.")


def test_a_multi_valued_parameter_may_repeat(world):
    response = world["client"].get("/api/v1/events?type=endorsement.received&type=endorsement.active")

    assert response.status_code == 200, response.content[:300]


# --- kind 4: deep nesting, on every operation that takes a body ----------------------------------------------

NESTED_25_KB = b'{"a":' * 5000 + b"1" + b"}" * 5000
BODY_OPERATIONS = sorted(
    (method, path)
    for path, operations in SCHEMA["paths"].items()
    for method, operation in operations.items()
    if method in (*WRITE_METHODS, "delete") and ("requestBody" in operation or method == "delete")
)


@pytest.mark.parametrize(("method", "path"), BODY_OPERATIONS)
@pytest.mark.parametrize("content_type", ["application/json", "text/plain", "multipart/form-data; boundary=x"])
@pytest.mark.parametrize("idempotency_key", [None, "nested-1"])
def test_a_deeply_nested_body_is_400_before_anything_parses_it(world, method, path, content_type, idempotency_key):
    """Refused at the edge — before the Idempotency-Key fingerprint (which canonicalises JSON bodies) and before
    the insurer callback view, which parses its raw body itself."""
    url = path.replace("{id}", str(world["employer"].pk)).replace("{insurer_code}", "sandbox-rest")
    extra = {"HTTP_IDEMPOTENCY_KEY": idempotency_key} if idempotency_key else {}
    before = row_counts()

    response = getattr(world["client"].client, method)(url, NESTED_25_KB, content_type=content_type, **extra)

    assert response.status_code == 400, response.content[:300]
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["type"].endswith("/nesting-too-deep")
    assert body["detail"] == "The JSON body is nested more than 32 levels deep."
    assert row_counts() == before


def test_the_nesting_table_walks_every_body_endpoint():
    assert {
        ("post", "/api/v1/employers"),
        ("post", "/api/v1/endorsements"),
        ("post", "/api/v1/endorsement-batches"),
        ("post", "/api/v1/insurer-callbacks/{insurer_code}"),
        ("post", "/api/v1/ledger/topups"),
        ("patch", "/api/v1/employers/{id}"),
    } <= set(BODY_OPERATIONS)


def test_a_body_just_within_the_nesting_limit_is_parsed(world):
    nested = {"name": "Deep", "external_ref": "D-1"}
    for _ in range(30):  # 31 levels with the outer object: within the limit of 32
        nested = {"x": nested}
    body = {"name": "Deep", "external_ref": "D-1", "extra": nested}

    response = world["client"].post("/api/v1/employers", body)

    # Parsed (not the nesting guard's 400): the body's fields were read, and the one the endpoint does not take
    # is named.
    assert_422_on(response, "/extra", UNKNOWN_FIELD_MESSAGE)


# --- kind 2: every amount in a request is a MoneyField (the schema shows the grammar) -------------------------

# Decimal request fields that are rates, not money: the same grammar with four places (ADR 0014).
RATES = {"premium_rate_per_mille"}


def _request_schemas() -> Iterator[tuple[str, dict]]:
    for path, operations in SCHEMA["paths"].items():
        for method, operation in operations.items():
            for content in operation.get("requestBody", {}).get("content", {}).values():
                yield f"{method} {path}", content["schema"]


def test_every_decimal_in_every_request_schema_has_the_one_grammar_money_or_rate():
    decimals = {
        (operation, "/".join(field), prop.get("pattern"))
        for operation, schema in _request_schemas()
        for field, prop in _fields(schema)
        if prop.get("format") == "decimal" or prop.get("type") == "number"
    }

    assert decimals, "no decimal field found: the walk is broken"
    offenders = {d for d in decimals if d[2] != (RATE_PATTERN if d[1].rsplit("/", 1)[-1] in RATES else MONEY_PATTERN)}
    assert offenders == set()
    assert ("post /api/v1/policies", "premium_rate_per_mille", RATE_PATTERN) in decimals
    # The endorsement shapes (documented here, parsed by part B) show the grammar too.
    assert ("post /api/v1/endorsements", "sum_insured", MONEY_PATTERN) in decimals
    assert ("post /api/v1/endorsements", "changes/sum_insured", MONEY_PATTERN) in decimals


# --- kind 3: a lone surrogate in any string of any JSON body (enums and lists too) ----------------------------

LONE_SURROGATE = "X\ud800"


def _string_leaves(schema: dict) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """(path, bad value) for every writable field that holds strings: text, enums, dates, lists of strings."""
    for field, prop in _fields(schema):
        if prop.get("type") == "string":
            yield field, LONE_SURROGATE
        elif prop.get("type") == "array" and _resolve(prop.get("items", {})).get("type") == "string":
            yield (*field, 0), [LONE_SURROGATE]


SURROGATE_CASES = [
    (method, path, field, value)
    for method, path, schema in _json_operations()
    if path != "/api/v1/insurer-callbacks/{insurer_code}"  # signed: its own test below
    for field, value in _string_leaves(schema)
    # The endorsement parser stops at a bad `type` (it decides the shape); its text fields, surrogates included,
    # are walked by apps/endorsements/tests/test_bad_input.py with valid bodies around them.
    if (method, path) not in PARSED_ELSEWHERE or field == ("type",)
]


def test_the_surrogate_table_walks_enums_and_lists():
    walked = {(m, p, "/".join(map(str, f))) for m, p, f, _ in SURROGATE_CASES}

    # The trial's 500s: choice fields echoed back by the renderer, which could not encode them.
    assert {
        ("post", "/api/v1/employers", "status"),
        ("patch", "/api/v1/employers/{id}", "status"),
        ("post", "/api/v1/loan-applications", "loan_type"),
        ("post", "/api/v1/webhook-endpoints", "event_types/0"),
        ("post", "/api/v1/endorsements", "type"),
    } <= walked


@pytest.mark.parametrize(
    ("method", "path", "field", "value"),
    SURROGATE_CASES,
    ids=[f"{m.upper()} {p} {'/'.join(map(str, f))}" for m, p, f, _ in SURROGATE_CASES],
)
def test_a_lone_surrogate_in_any_string_is_422_on_that_field_and_writes_nothing(world, method, path, field, value):
    url = path
    for prefix, real_id in {**PATH_IDS, "/api/v1/employers/{id}": lambda w: w["employer"].pk}.items():
        if url.startswith(prefix):
            url = url.replace(prefix, prefix.replace("{id}", str(real_id(world))), 1)
    url = url.replace("{id}", str(_discrepancy(world)) if "discrepancies" in url else "1")
    body = _set({}, tuple(p for p in field if isinstance(p, str)), value)  # a list field: the list holds it
    before = row_counts()

    # Sent as JSON text with the `\\ud800` escape (the test client's renderer cannot encode the string itself).
    response = getattr(world["client"].client, method)(url, json.dumps(body), content_type="application/json")

    # Text fields say why (the control-character rule covers surrogates); enums say the value is not a choice.
    assert_422_on(response, "/" + "/".join(map(str, field)))
    assert row_counts() == before


def test_a_paired_surrogate_escape_is_a_character_not_an_error(world):
    response = world["client"].post("/api/v1/employers", {"name": "Globex \U0001f600", "external_ref": "GLX-EMOJI"})

    assert response.status_code == 201, response.content
    assert response.json()["name"] == "Globex \U0001f600"


def test_a_lone_surrogate_in_a_signed_insurer_callback_is_422_and_applies_nothing(world):
    from apps.insurers.callback_secrets import callback_secret_generate, callback_secret_seal
    from apps.insurers.sandbox.callbacks import sign_headers

    insurer, secret = world["policy"].insurer, callback_secret_generate()
    insurer.callback_secret = callback_secret_seal(secret, insurer_code=insurer.code)
    insurer.save(update_fields=["callback_secret"])
    raw = json.dumps({"events": [{"type": "endorsement.confirmed\ud800", "data": {"idempotency_key": "k"}}]})
    signed = sign_headers(secret=secret, msg_id="msg_surrogate", body=raw)
    signed.pop("Content-Type")
    extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in signed.items()}
    before = row_counts()

    response = world["client"].client.post(
        f"/api/v1/insurer-callbacks/{insurer.code}", data=raw, content_type="application/json", **extra
    )

    assert_422_on(response, "/events/0/type")
    changed = {table for table, count in row_counts().items() if count != before[table]}
    assert changed <= {"audit.InsurerExchangeEvent"}  # the refused exchange is logged, nothing else


# --- kinds 3 and 12: a control character in any path under /api/ is a problem+json 404 ----------------------

PATH_CONTROL_CASES = [
    (method, path.replace("{" + name + "}", bad))
    for path, operations in SCHEMA["paths"].items()
    for method in operations
    if method in ("get", "post", "patch", "delete")
    for name in re.findall(r"{(\w+)}", path)
    for bad in ("%00", "a%01b", "1%7F", "%C2%85")
]


def test_the_path_table_walks_every_path_parameter():
    assert {p for _, p in PATH_CONTROL_CASES} >= {"/api/v1/events/%00", "/api/v1/events/%00/redeliver"}


@pytest.mark.parametrize(("method", "url"), PATH_CONTROL_CASES)
def test_a_control_character_in_a_path_is_404_problem_json_and_writes_nothing(world, method, url):
    before = row_counts()

    client = world["client"].client
    if method in ("get", "delete"):
        response = getattr(client, method)(url)
    else:
        response = getattr(client, method)(url, b"{}", content_type="application/json")

    assert response.status_code == 404, response.content[:300]
    assert response["Content-Type"] == PROBLEM
    assert response.json()["request_id"] == response["X-Request-ID"]
    assert row_counts() == before


@pytest.mark.parametrize("url", ["/api", "/api/", "/api/v2/endorsements", "/api/v1/nope"])
def test_every_unknown_address_of_the_api_is_a_problem_json_404(client, url):
    response = client.get(url)

    assert response.status_code == 404
    assert response["Content-Type"] == PROBLEM
    assert response.json()["status"] == 404


def test_a_format_the_schema_view_cannot_render_is_a_json_problem(client):
    response = client.get("/api/schema/", {"format": "xml"})

    assert response.status_code == 404
    assert response["Content-Type"] == PROBLEM
    assert response.json()["status"] == 404


# --- kind 9: a stored response is replayed only to a key that may see it, on every creating operation --------

POST_OPERATIONS = sorted(op for op in BASES if op[0] == "post")
# Only keys acting for all of a partner's employers may create employers: nothing to replay across employers.
PLATFORM_ONLY = {("post", "/api/v1/employers")}
# Creating operations that honour Idempotency-Key (resolving a discrepancy is idempotent by itself).
REPLAYED = {op for op in POST_OPERATIONS if op[1] != "/api/v1/discrepancies/{id}/resolve"}


@pytest.mark.parametrize("operation", POST_OPERATIONS, ids=lambda op: op[1])
def test_a_key_of_another_employer_never_receives_a_stored_response(world, make_key, operation):
    """Two keys of one partner bound to different employers send the same Idempotency-Key and body: the second
    key's request is its own (typically 404), never the first key's stored response (newcomer trial of issue 8
    found `POST /webhook-endpoints` replayed across employers)."""
    employer = world["employer"]
    other = PolicyFactory(employer__partner=employer.partner).employer
    first = make_key(partner=employer.partner, employers=[employer])
    second = make_key(partner=employer.partner, employers=[other])
    path, body = BASES[operation](world)
    key = f"shared-{operation[1]}"
    with resolver_stub(WEBHOOK_DNS):
        original = first.post(path, body, HTTP_IDEMPOTENCY_KEY=key)
        if operation in PLATFORM_ONLY:
            assert original.status_code == 403
            return
        assert 200 <= original.status_code < 300, original.content[:300]
        replay = second.post(path, body, HTTP_IDEMPOTENCY_KEY=key)
        again = first.post(path, body, HTTP_IDEMPOTENCY_KEY=key)

    assert "Idempotent-Replayed" not in replay, replay.content[:300]
    assert replay.content != original.content
    if 200 <= replay.status_code < 300 and operation in REPLAYED:  # its own request: its retries replay it
        with resolver_stub(WEBHOOK_DNS):
            retried = second.post(path, body, HTTP_IDEMPOTENCY_KEY=key)
        assert retried["Idempotent-Replayed"] == "true"
        assert retried.json()["id"] == replay.json()["id"]
    if operation in REPLAYED:  # the key that made it still gets its replay (a secret shown once is null there)
        assert again["Idempotent-Replayed"] == "true"
        assert again.json() == {**original.json(), **{k: None for k in ("secret",) if k in original.json()}}


def test_a_key_of_another_employer_reusing_an_idempotency_key_has_requests_of_its_own(world, make_key):
    """Keys are claimed per partner and key binding: the second key's retries replay its own response, and a
    different body is not refused as "reused" — it never learns another key used that Idempotency-Key."""
    employer = world["employer"]
    other = PolicyFactory(employer__partner=employer.partner).employer
    first = make_key(partner=employer.partner, employers=[employer])
    second = make_key(partner=employer.partner, employers=[other])
    body = {"url": WEBHOOK_URL, "event_types": ["ledger.topup_posted"]}
    with resolver_stub(WEBHOOK_DNS):
        mine = first.post("/api/v1/webhook-endpoints", body, HTTP_IDEMPOTENCY_KEY="shared-x")
        theirs = second.post("/api/v1/webhook-endpoints", body, HTTP_IDEMPOTENCY_KEY="shared-x")
        theirs_again = second.post("/api/v1/webhook-endpoints", body, HTTP_IDEMPOTENCY_KEY="shared-x")
        different = second.post(
            "/api/v1/webhook-endpoints", {**body, "description": "other"}, HTTP_IDEMPOTENCY_KEY="shared-x"
        )

    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert theirs.json()["id"] != mine.json()["id"]
    assert theirs.json()["employers"] == [other.pk]
    assert theirs_again["Idempotent-Replayed"] == "true"
    assert theirs_again.json()["id"] == theirs.json()["id"]
    assert different.status_code == 422  # its own key, now with another body: "reused", as for any key
    assert different.json()["type"].endswith("idempotency-key-reused")


# --- endorsement bodies: a key the body does not take is named, never dropped (newcomer trial) ----------------

UNKNOWN_KEY_CASES = [
    ("/api/v1/endorsements", "addition", ("status",)),
    ("/api/v1/endorsements", "addition", ("premium_amount",)),
    ("/api/v1/endorsements", "addition", ("employee", "salary")),
    ("/api/v1/endorsements", "addition", ("employee_code",)),  # an addition names its member inside `employee`
    ("/api/v1/endorsements", "deletion", ("employee",)),
    ("/api/v1/endorsements", "correction", ("sum_insured",)),  # a correction changes it inside `changes`
    ("/api/v1/endorsements/quote", "addition", ("status",)),
    ("/api/v1/endorsements/quote", "addition", ("employee", "salary")),
    ("/api/v1/endorsement-batches", "batch", ("status",)),
]


def _endorsement_body(world, kind: str) -> dict:
    policy, effective = world["policy"], date(2026, 6, 1)
    if kind == "deletion":
        return deletion(policy, "E-1", effective=effective)
    if kind == "correction":
        return correction(policy, "E-1", effective=effective, first_name="Asha")
    body = addition(policy, "E-1", effective=effective)
    if kind == "batch":
        return {"employer": body.pop("employer"), "policy": body.pop("policy"), "rows": [body]}
    return body


@pytest.mark.parametrize(("path", "kind", "field"), UNKNOWN_KEY_CASES, ids=lambda v: str(v))
def test_a_key_an_endorsement_body_does_not_take_is_422_naming_it_and_writes_nothing(world, path, kind, field):
    body = _set(_endorsement_body(world, kind), field, "x")
    before = row_counts()

    response = world["client"].post(path, body)

    assert_422_on(response, "/" + "/".join(field), UNKNOWN_FIELD_MESSAGE)
    assert row_counts() == before


def test_a_batch_row_with_a_key_it_does_not_take_is_refused_by_name_and_the_valid_rows_go_on(world):
    good = addition(world["policy"], "E-1", effective=date(2026, 6, 1))
    bad = addition(world["policy"], "E-2", effective=date(2026, 6, 1))
    ids = {"employer": good.pop("employer"), "policy": good.pop("policy")}
    bad = {k: v for k, v in bad.items() if k not in ids} | {"employer": 999, "premium_amount": "1.00"}

    response = world["client"].post("/api/v1/endorsement-batches", {**ids, "rows": [good, bad]})

    assert response.status_code == 202, response.content
    batch = response.json()
    assert batch["total_rows"] == 2
    assert sorted((e["row"], e["field"]) for e in batch["errors"]) == [(2, "employer"), (2, "premium_amount")]


# --- booleans in a query string or a form body (all text there) ------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"flag": True}, True),
        ({"flag": False}, False),
        ("flag=true", True),
        ("flag=false", False),
        ({"flag": "true"}, BOOLEAN_MESSAGE),
        ({"flag": 1}, BOOLEAN_MESSAGE),
        ("flag=yes", BOOLEAN_MESSAGE),
        ("flag=1", BOOLEAN_MESSAGE),
        ("flag=True", BOOLEAN_MESSAGE),
        ("flag=on", BOOLEAN_MESSAGE),
    ],
)
def test_a_boolean_is_json_true_or_false_or_in_a_query_the_text_true_or_false(data, expected):
    from django.http import QueryDict
    from rest_framework import serializers

    from apps.common.serializers import Serializer

    class Flag(Serializer):
        flag = serializers.BooleanField()

    serializer = Flag(data=QueryDict(data) if isinstance(data, str) else data)

    if isinstance(expected, bool):
        assert serializer.is_valid(), serializer.errors
        assert serializer.validated_data == {"flag": expected}
    else:
        assert not serializer.is_valid()
        assert serializer.errors == {"flag": [expected]}
