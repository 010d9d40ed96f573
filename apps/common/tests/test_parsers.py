"""The JSON nesting guard (ADR 0015, issue 8 kind 4): depth measured without recursion, exactly for JSON."""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.exceptions import ParseError

from apps.common.parsers import GuardedJSONParser, NestingTooDeep, json_nesting_depth, json_nesting_exceeds


def recursive_depth(value: object) -> int:
    """The oracle: nesting depth of a parsed JSON value, computed the obvious (recursive) way."""
    if isinstance(value, dict):
        return 1 + max((recursive_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((recursive_depth(v) for v in value), default=0)
    return 0


# Strings full of brackets, quotes and backslashes: the scanner must not count what is inside a string.
tricky_text = st.text(alphabet='[]{}"\\ab\u00e9\u20ac', max_size=8)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | tricky_text,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(tricky_text, children, max_size=4),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values, encoding=st.sampled_from(["utf-8", "utf-16", "utf-32"]), indent=st.sampled_from([None, 2]))
def test_depth_equals_the_recursive_depth_of_the_parsed_value(value, encoding, indent):
    body = json.dumps(value, ensure_ascii=False, indent=indent).encode(encoding)

    assert json_nesting_depth(body) == recursive_depth(value)
    for limit in (0, 1, 2, 5):
        assert json_nesting_exceeds(body, limit) is (recursive_depth(value) > limit)


def test_a_25_kb_body_nested_5000_levels_is_measured_without_recursion():
    body = b'{"a":' * 5000 + b"1" + b"}" * 5000
    assert 25_000 <= len(body) <= 31_000

    assert json_nesting_depth(body) == 5000
    assert json_nesting_exceeds(body, 32) is True


def test_brackets_inside_strings_do_not_count():
    body = json.dumps({"note": "[" * 5000, "escaped": '\\"[[[['}).encode()

    assert json_nesting_depth(body) == 1
    assert json_nesting_exceeds(body, 32) is False


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", 0),
        (b"12", 0),
        (b"[]", 1),
        (b"[[]]", 2),
        (b'{"a": [1, {"b": "[[["}]}', 3),
        (b'["\\", "\\"[[", {"": []}]', 3),
        (b"]]]][[", 2),
        (b"]][[]][[[", 3),
    ],
)
def test_depth_of_small_bodies(body, expected):
    assert json_nesting_depth(body) == expected


def test_parser_refuses_deep_bodies_with_a_parse_error_before_parsing(settings):
    settings.API_MAX_JSON_DEPTH = 3
    parser = GuardedJSONParser()

    assert parser.parse(io.BytesIO(b'{"a": [[1]]}')) == {"a": [[1]]}
    with pytest.raises(NestingTooDeep) as caught:
        parser.parse(io.BytesIO(b'{"a": [[[1]]]}'))
    assert isinstance(caught.value, ParseError)
    assert caught.value.detail == "The JSON body is nested more than 3 levels deep."


def test_parser_refuses_nan_and_malformed_json():
    parser = GuardedJSONParser()
    for body in (b'{"a": NaN}', b'{"a": Infinity}', b'{"a": 1', b"\xff"):
        with pytest.raises(ParseError):
            parser.parse(io.BytesIO(body))
