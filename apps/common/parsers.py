"""JSON bodies with a nesting guard (issue 8, kind 4; ADR 0015).

Python's `json` module and everything that walks its result (DRF serializers, the Idempotency-Key
fingerprint, audit diffs) recurse once per level: a 25 KB body nested 5,000 levels deep raises
`RecursionError`, a 500. `json_nesting_depth` measures the depth of a body **without recursing and
without parsing it** (strings are blanked out by one regular expression, then the brackets left are
counted), so the edge middleware and the DRF parser can refuse a body nested deeper than
`API_MAX_JSON_DEPTH` (default 32; Keel's deepest legitimate body is 4 levels) with 400 problem+json
before anything recurses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from itertools import accumulate
from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json as drf_json

# A JSON string: a quote, then anything but a quote or backslash, or a backslash escape, then a quote.
_STRING_RE = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_NOT_BRACKET_RE = re.compile(rb"[^\[\]{}]")
_OPENERS = frozenset(b"[{")


class NestingTooDeep(ParseError):
    """400 problem+json: the body is nested deeper than the API accepts."""

    def __init__(self, limit: int) -> None:
        super().__init__(detail=f"The JSON body is nested more than {limit} levels deep.")
        self.slug = "nesting-too-deep"


def max_json_depth() -> int:
    return int(getattr(settings, "API_MAX_JSON_DEPTH", 32))


def json_nesting_depth(body: bytes) -> int:
    """The deepest bracket nesting of `body` read as JSON text, outside strings. Linear, no recursion.

    `body` is bytes as received (UTF-8, or UTF-16/32 as `json.loads` also detects). Text that is not JSON
    gets a meaningless but finite number; only JSON can recurse, and for JSON the figure is exact:
    `{"a": [1, {"b": "[[["}]}` → 3.
    """
    if not body:
        return 0
    encoding = json.detect_encoding(body)
    if encoding != "utf-8":
        try:
            body = body.decode(encoding).encode("utf-8")
        except UnicodeDecodeError:
            return 0  # undecodable text cannot be parsed as JSON either
    brackets = _NOT_BRACKET_RE.sub(b"", _STRING_RE.sub(b"", body))
    if not brackets:
        return 0
    return max(0, max(accumulate(1 if byte in _OPENERS else -1 for byte in brackets)))


def json_nesting_exceeds(body: bytes, limit: int) -> bool:
    """Whether `body` is nested deeper than `limit`. O(1) extra work for the common case: a body with at
    most `limit` opening bytes `[`/`{` in all cannot be nested deeper (two C-level `bytes.count` calls; in
    UTF-16/32 text every bracket is still one such byte, so the count never undercounts)."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    return json_nesting_depth(body) > limit


class GuardedJSONParser(parsers.JSONParser):
    """DRF's JSON parser, refusing bodies nested deeper than `API_MAX_JSON_DEPTH` before parsing them.

    The edge middleware (`JsonNestingGuardMiddleware`) already refused such bodies for every path under
    /api/; this parser repeats the check so a view reached another way (a test's `APIRequestFactory`, a
    future non-API mount) is covered by the same rule. `NaN`/`Infinity` are refused as DRF does.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        raw = stream.read() if stream is not None else b""
        limit = max_json_depth()
        if json_nesting_exceeds(raw, limit):
            raise NestingTooDeep(limit)
        try:
            parse_constant = drf_json.strict_constant if self.strict else None
            return json.loads(raw.decode(encoding), parse_constant=parse_constant)
        except RecursionError:
            raise NestingTooDeep(limit)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}")
