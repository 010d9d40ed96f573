"""The API's JSON renderer: DRF's, which never fails on a string it cannot encode as UTF-8."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework.renderers import JSONRenderer


class KeelJSONRenderer(JSONRenderer):
    """DRF's `JSONRenderer` (UTF-8, non-ASCII kept as is), falling back to `\\uXXXX` escapes for a body that
    holds a lone surrogate.

    Bodies are parsed with lone surrogates refused (`apps.common.parsers.refuse_lone_surrogates`), but an error
    message may still echo a value from somewhere else (a query string, a header); `str.encode("utf-8")` of
    such a value raised `UnicodeEncodeError` while the response was rendered — a 500, and under `make run` a
    connection left without any answer (newcomer trial of issue 8). Escaped, the same body is valid JSON.
    """

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Mapping[str, Any] | None = None
    ) -> bytes:
        try:
            return super().render(data, accepted_media_type, renderer_context)  # type: ignore[arg-type]
        except UnicodeEncodeError:
            return _AsciiJSONRenderer().render(data, accepted_media_type, renderer_context)  # type: ignore[arg-type]


class _AsciiJSONRenderer(JSONRenderer):
    ensure_ascii = True
