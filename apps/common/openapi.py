"""The error half of the OpenAPI contract, added to every operation by one drf-spectacular hook.

Views document their success responses (and any error with a body of its own, e.g. a 409 that names the
existing id); `problem_responses_hook` adds the RFC 9457 problem+json responses each operation can give,
derived from what the operation is — so a new view is covered without a line of its own (issue 8;
docs/architecture.md, "The API contract"):

| status | when | operations |
| --- | --- | --- |
| 400 | malformed request: unparsable or too deeply nested JSON, a bad header (`Idempotency-Key`) | all |
| 401, 403 | no/invalid API key; key without the scope (or not allowed to do this) | API-key operations |
| 404 | an object the key may not see or that does not exist (path, filter or body; SPEC §2), a stale cursor | \
  API-key operations and those with path parameters |
| 409 | a conflict with the current state (idempotent request still running, state changed) | writes |
| 406 | an `Accept` header that allows no type the operation answers in | all |
| 414 | a request target (path and query string) over 8,192 bytes (`apps.common.asgi`) | all |
| 411, 413, 415 | chunked body never terminated; body over its limit; a content type the operation does not parse \
  | operations with a body |
| 422 | a field that fails validation (`errors: [{pointer, detail}]`); a query parameter the operation does not \
  take (ADR 0064) | API-key operations, writes and filtered reads |
| 429 | the key's rate limit (`Retry-After`) | all |
| 503 | a dependency the operation needs is down (`Retry-After`) | all |

Responses a view declared itself keep their schema but are served as `application/problem+json` (what
`apps.common.errors` sends); a bare "any object" becomes the `Problem` schema.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details. Extra members (e.g. `existing_id`, `request_id`) may follow.",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string", "format": "uri", "description": "Stable URI naming the problem kind"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "instance": {"type": "string", "nullable": True, "description": "The request path"},
        "errors": {
            "type": "array",
            "description": "One entry per invalid field (validation failures)",
            "items": {
                "type": "object",
                "required": ["pointer", "detail"],
                "properties": {
                    "pointer": {"type": "string", "description": "JSON Pointer into the request body ('' = whole)"},
                    "detail": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}

_RETRY_AFTER = {
    "Retry-After": {"schema": {"type": "integer", "minimum": 0}, "description": "Seconds to wait before retrying"}
}
_WRITE_METHODS = frozenset({"post", "put", "patch", "delete"})
_BODY_METHODS = frozenset({"post", "put", "patch"})


def problem_statuses(*, method: str, operation: dict[str, Any], path_parameters: bool) -> set[int]:
    """The problem+json statuses an operation can answer, from its method, security, parameters and body."""
    statuses = {400, 406, 414, 429, 503}
    security = operation.get("security")
    if security is None or any(requirement for requirement in security):
        statuses |= {401, 403, 404, 422}  # 422: a query parameter the operation does not take (ADR 0064)
    if path_parameters:
        statuses.add(404)
    if method in _WRITE_METHODS:
        statuses |= {409, 422}
    if method in _BODY_METHODS or "requestBody" in operation:
        statuses |= {411, 413, 415, 422}
    if any(p.get("in") == "query" for p in operation.get("parameters", [])):
        statuses.add(422)
    return statuses


def _as_problem(response: dict[str, Any]) -> None:
    content = response.get("content") or {}
    if PROBLEM_MEDIA_TYPE in content:
        return
    schema = next((media.get("schema") for media in content.values() if media.get("schema")), None)
    if not schema or schema == {"type": "object", "additionalProperties": {}} or schema == {"type": "object"}:
        schema = PROBLEM_REF
    response["content"] = {PROBLEM_MEDIA_TYPE: {"schema": schema}}


def problem_responses_hook(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular POSTPROCESSING_HOOKS entry: add the `Problem` component and every operation's
    problem+json responses (see the module docstring for the rule)."""
    result.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    for path, item in result.get("paths", {}).items():
        path_parameters = "{" in path
        for method, operation in item.items():
            if method not in {"get", "post", "put", "patch", "delete", "head", "options"}:
                continue
            if operation.get("security"):  # drf-spectacular lists the global requirement once per class
                unique: list[Any] = []
                for requirement in operation["security"]:
                    if requirement not in unique:
                        unique.append(requirement)
                operation["security"] = unique
            responses = operation.setdefault("responses", {})
            for status in problem_statuses(method=method, operation=operation, path_parameters=path_parameters):
                responses.setdefault(str(status), {"description": HTTPStatus(status).phrase})
            for code, response in responses.items():
                if code.isdigit() and int(code) >= 400:
                    _as_problem(response)
                    response.setdefault("description", HTTPStatus(int(code)).phrase)
                    if code in ("429", "503"):
                        response.setdefault("headers", {}).update(_RETRY_AFTER)
    return result
