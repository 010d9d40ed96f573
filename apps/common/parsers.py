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
from collections.abc import Mapping
from itertools import accumulate
from typing import Any

from django.conf import settings
from rest_framework import parsers
from rest_framework.exceptions import ParseError
from rest_framework.utils import json as drf_json

#: Set by `JsonNestingGuardMiddleware` to the length of the body it checked, so the parser need not repeat it.
NESTING_CHECKED_META = "keel.json_nesting_checked"
_STRUCTURAL = b'"[]{}'
_NON_STRUCTURAL = bytes(b for b in range(256) if b not in _STRUCTURAL)
# Opening and closing brackets of either kind as `[` / `]`: depth counts levels, whatever their kind.
_ONE_KIND = bytes.maketrans(b"{}", b"[]")


class NestingTooDeep(ParseError):
    """400 problem+json: the body is nested deeper than the API accepts."""

    def __init__(self, limit: int) -> None:
        super().__init__(detail=f"The JSON body is nested more than {limit} levels deep.")
        self.slug = "nesting-too-deep"


def max_json_depth() -> int:
    return int(getattr(settings, "API_MAX_JSON_DEPTH", 32))


def _brackets_outside_strings(body: bytes) -> bytes:
    """The brackets of `body` outside JSON strings, in order, as `[`/`]`. Every step is a C-level bytes
    operation (no per-character Python): drop escape pairs (`\\\\` first, then `\\"`), keep only quotes and
    brackets, then keep every other quote-separated part (the parts outside strings). An unterminated string
    leaves its tail counted as outside (conservative)."""
    encoding = json.detect_encoding(body)
    if encoding != "utf-8":
        try:
            body = body.decode(encoding).encode("utf-8")
        except UnicodeDecodeError:
            return b""  # undecodable text cannot be parsed as JSON either
    if b"\\" in body:  # one memchr; most bodies have no escapes at all
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    body = body.translate(None, _NON_STRUCTURAL)
    # Adjacent quotes are a string without brackets or two strings with no bracket between them: dropping
    # the pair changes no bracket outside strings, and leaves few parts for the split (most strings hold none).
    body = body.replace(b'""', b"")
    return b"".join(body.split(b'"')[0::2]).translate(_ONE_KIND)


def json_nesting_depth(body: bytes) -> int:
    """The deepest bracket nesting of `body` read as JSON text, outside strings; no recursion.

    `body` is bytes as received (UTF-8, or UTF-16/32, which `json.loads` also detects). For JSON the figure is
    exact (`{"a": [1, {"b": "[[["}]}` → 3); text that is not JSON gets a finite, meaningless figure (a
    stray closer never takes the depth below zero). Linear, but one Python step per bracket: diagnostics and
    tests use it; the request path uses `json_nesting_exceeds`.
    """
    deltas = (1 if byte == 0x5B else -1 for byte in _brackets_outside_strings(body))
    return max(accumulate(deltas, lambda depth, delta: max(0, depth + delta), initial=0))


def json_nesting_exceeds(body: bytes, limit: int) -> bool:
    """Whether a JSON parser reading `body` would nest deeper than `limit` levels.

    1. A body with at most `limit` bytes `[`/`{` in all cannot nest deeper: two `bytes.count` calls decide
       almost every request (in UTF-16/32 text each bracket is still one such byte).
    2. Otherwise, on the brackets outside strings: more than `limit` openers in a row → deeper (the usual
       attack, found by one search). Then innermost pairs `[]` are removed, one level per round (C-level
       `bytes.replace`), at most `limit` rounds. Nothing left → not deeper than `limit`.
    3. An opener that survives `limit` rounds that each removed a level encloses more than `limit` levels
       → deeper. If the rounds stopped changing earlier, what is left is closers followed by openers: a
       closer there is stray (the parser fails at it, having nested at most `limit` deep); openers left
       alone are unclosed levels the parser enters before failing at the end, added to the rounds done.
    Invalid JSON can be reported as too deep (400 either way); valid JSON is judged exactly.
    """
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    remaining = _brackets_outside_strings(body)
    if b"[" * (limit + 1) in remaining:
        return True
    rounds = 0
    while rounds < limit:
        reduced = remaining.replace(b"[]", b"")
        if reduced == remaining:
            break
        remaining, rounds = reduced, rounds + 1
    else:
        return b"[" in remaining
    if not remaining or remaining.startswith(b"]"):
        return False
    return remaining.count(b"[") + rounds > limit


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
        request = parser_context.get("request")
        checked = request is not None and request.META.get(NESTING_CHECKED_META) == len(raw)
        if not checked and json_nesting_exceeds(raw, limit):
            raise NestingTooDeep(limit)
        try:
            parse_constant = drf_json.strict_constant if self.strict else None
            return json.loads(raw.decode(encoding), parse_constant=parse_constant)
        except RecursionError:
            raise NestingTooDeep(limit)
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}")
