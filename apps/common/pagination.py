"""Cursor pagination with `limit` (default 50, max 500) and an RFC 8288 `Link` header."""

from __future__ import annotations

from typing import Any

from rest_framework import pagination
from rest_framework.response import Response


class CursorPagination(pagination.CursorPagination):
    page_size = 50
    max_page_size = 500
    page_size_query_param = "limit"
    ordering = "-id"
    cursor_query_param = "cursor"

    def get_paginated_response(self, data: list[Any]) -> Response:
        next_url, previous_url = self.get_next_link(), self.get_previous_link()
        response = Response({"next": next_url, "previous": previous_url, "results": data})
        links = []
        if next_url:
            links.append(f'<{next_url}>; rel="next"')
        if previous_url:
            links.append(f'<{previous_url}>; rel="prev"')
        if links:
            response["Link"] = ", ".join(links)
        return response

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["results"],
            "properties": {
                "next": {"type": "string", "nullable": True, "format": "uri"},
                "previous": {"type": "string", "nullable": True, "format": "uri"},
                "results": schema,
            },
        }
