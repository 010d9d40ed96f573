"""Cursor pagination with `limit` (default 50, an integer from 1 to 500) and an RFC 8288 `Link` header.

A `limit` that is not a positive integer is bad input — 422 naming `limit` — not silently the default page
(DRF's behaviour), as every other bad query value is (SPEC §2); a larger one than `max_page_size` asks for as many
as a page holds and gets that many (ADR 0060).

A cursor is opaque to clients but decodable: one that does not decode, or whose position is not a value of the
ordering column (a crafted `p=abc` on an integer id), is bad input — 422 naming `cursor`, never a 500 from the
query and never DRF's 404 "Invalid cursor" (SPEC §2).
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db.models import QuerySet
from rest_framework import exceptions, pagination
from rest_framework.request import Request
from rest_framework.response import Response

from apps.common.errors import DomainValidationError

CURSOR_ERROR = "Not a cursor this list gave out; start again without `cursor`."


class CursorPagination(pagination.CursorPagination):
    page_size = 50
    max_page_size = 500
    page_size_query_param = "limit"
    ordering = "-id"
    cursor_query_param = "cursor"

    def get_page_size(self, request: Request) -> int:
        """`limit` from the query (default `page_size`), at most `max_page_size`; `DomainValidationError` (422)
        naming `limit` when it is not a positive integer."""
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        if not (raw.isascii() and raw.isdigit() and raw.strip("0")):
            raise DomainValidationError(
                {self.page_size_query_param: "Must be a positive integer (at most 500 are given)."}
            )
        return self.max_page_size if len(raw) > 6 else min(int(raw), self.max_page_size)

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1}
                parameter["description"] = (
                    f"Items per page: a positive integer; at most {self.max_page_size} are given."
                )
        return parameters

    def paginate_queryset(self, queryset: QuerySet[Any], request: Request, view: Any = None) -> list[Any] | None:
        self._model = queryset.model  # decode_cursor checks the position against the ordering column
        return super().paginate_queryset(queryset, request, view)

    def decode_cursor(self, request: Request) -> pagination.Cursor | None:
        """DRF's cursor, or `DomainValidationError` (422) naming `cursor` when it does not decode or its
        position is not a value of the ordering column."""
        try:
            cursor = super().decode_cursor(request)
        except exceptions.NotFound:
            raise DomainValidationError({"cursor": CURSOR_ERROR}) from None
        if cursor is not None and cursor.position is not None:
            ordering = self.ordering if isinstance(self.ordering, str) else self.ordering[0]
            field = self._model._meta.get_field(ordering.lstrip("-"))
            try:
                field.to_python(cursor.position)  # type: ignore[union-attr]
            except (DjangoValidationError, ValueError, TypeError):
                raise DomainValidationError({"cursor": CURSOR_ERROR}) from None
        return cursor

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
