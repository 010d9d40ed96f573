"""The stream in the OpenAPI schema. It is a plain async Django view (DRF has no async views), so
drf-spectacular cannot see it; this postprocessing hook, listed before the problem+json hook, adds it."""

from __future__ import annotations

import copy
from typing import Any

from apps.partners.webhooks.contracts import EventType

STREAM_PATH = "/api/v1/events/stream"
STREAM_OPERATION_ID = "events_stream"

# The stream's parameters as published; the query ones are all it takes — any other is 422 (ADR 0064).
STREAM_PARAMETERS: list[dict[str, Any]] = [
    {
        "name": "type",
        "in": "query",
        "required": False,
        "description": "Only these event types (repeat, or separate with commas).",
        "schema": {"type": "array", "items": {"type": "string", "enum": list(EventType.values)}},
        "style": "form",
        "explode": True,
    },
    {
        "name": "employer",
        "in": "query",
        "required": False,
        "description": "Only this employer's events.",
        "schema": {"type": "integer", "minimum": 1},
    },
    {
        "name": "last_event_id",
        "in": "query",
        "required": False,
        "description": "Resume after this event (as the `Last-Event-ID` header).",
        "schema": {"type": "string", "maxLength": 40},
    },
    {
        "name": "Last-Event-ID",
        "in": "header",
        "required": False,
        "description": "Resume after this event id (sent by EventSource on reconnect).",
        "schema": {"type": "string", "maxLength": 40},
    },
]

STREAM_QUERY_PARAMETERS = frozenset(p["name"] for p in STREAM_PARAMETERS if p["in"] == "query")


def stream_operation_hook(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular POSTPROCESSING_HOOKS entry: document `GET /api/v1/events/stream`."""
    result.setdefault("paths", {})[STREAM_PATH] = {
        "get": {
            "operationId": STREAM_OPERATION_ID,
            "summary": "Live event stream (Server-Sent Events)",
            "description": "The caller's events as they are committed, in commit order: each is `id: <event id>`, "
            "`event: <type>`, `data: <the event JSON of GET /api/v1/events>`. Resume after a disconnect with the "
            "`Last-Event-ID` header (or `last_event_id`): nothing committed meanwhile is lost. A comment line is "
            "sent every 15 s. Events are those of the caller's partner and employers whose types its read scopes "
            "allow.",
            "tags": ["events"],
            "parameters": copy.deepcopy(STREAM_PARAMETERS),
            "security": [{"ApiKeyAuth": []}, {"OAuth2": []}],
            "responses": {
                "200": {
                    "description": "An endless `text/event-stream`.",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                }
            },
        }
    }
    return result
