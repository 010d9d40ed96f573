"""The query parameters an API operation takes are the ones its OpenAPI operation documents (ADR 0064).

A parameter an operation does not take is refused — 422 naming it (`UNKNOWN_PARAMETER_MESSAGE`) — never
ignored: a partner who sent `?employee_code=X-1` to a list without that filter believed the page was filtered.
The allowed set is not a list kept per view: it is what drf-spectacular derives from the view's code for the
published contract — its FilterSet (list views), its paginator's `cursor`/`limit` (list views only), and the
query parameters or query serializer its `@extend_schema` declares. So a filter added tomorrow is accepted and
documented at once, and a parameter a view reads but does not document is refused (and caught by the tests that
walk the schema) instead of working undocumented.

The set is computed once per view class and method, on its first request (≈ 1 ms per operation; the URLconf is
walked once per process).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any, cast

from apps.common.errors import DomainValidationError
from apps.common.text import EMPTY_PARAMETER_MESSAGE, UNKNOWN_PARAMETER_MESSAGE

#: At most this many unknown parameters are named in one answer (as for unknown body fields).
MAX_NAMED = 20

_allowed: dict[tuple[type, str], frozenset[str]] = {}
_endpoints: list[tuple[str, str, str, Any]] | None = None
_lock = threading.Lock()


def refuse_unknown_parameters(names: Iterable[str], allowed: frozenset[str]) -> None:
    """Raise `DomainValidationError` (422, one `errors` entry per name, pointer `/<name>`) when any of `names`
    (the query string's keys) is not in `allowed`; return None otherwise."""
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise DomainValidationError({name[:64]: UNKNOWN_PARAMETER_MESSAGE for name in unknown[:MAX_NAMED]})


def refuse_empty_values(query: Any) -> None:
    """Raise `DomainValidationError` (422 naming each) for a parameter of `query` (a `QueryDict`) given with an
    empty value (`?employer=`): a filter left empty must not read as "no filter" — a script whose `$EMPLOYER` was
    unset would otherwise get every employer's rows (newcomer trial, ADR 0064)."""
    empty = [name for name in query if any(value == "" for value in query.getlist(name))]
    if empty:
        raise DomainValidationError({name[:64]: EMPTY_PARAMETER_MESSAGE for name in empty[:MAX_NAMED]})


def documented_query_parameters(view_class: type, method: str) -> frozenset[str]:
    """The names of the `in: query` parameters the OpenAPI operation of `view_class` × `method` (upper case)
    documents; an empty set for an operation the schema does not publish (it then takes no query parameter)."""
    key = (view_class, method)
    found = _allowed.get(key)
    if found is None:
        found = _allowed[key] = _compute(view_class, method)
    return found


def _compute(view_class: type, method: str) -> frozenset[str]:
    from drf_spectacular.drainage import GENERATOR_STATS
    from drf_spectacular.generators import SchemaGenerator

    global _endpoints
    generator = SchemaGenerator()
    with _lock:
        if _endpoints is None:
            generator._initialise_endpoints()
            _endpoints = list(cast(list[tuple[str, str, str, Any]], generator.endpoints))
    names: set[str] = set()
    # Path-parameter guesses warn during generation; at request time they are noise, and they must not count
    # against a later `spectacular --fail-on-warn` in the same process.
    warnings, errors = dict(GENERATOR_STATS._warn_cache), dict(GENERATOR_STATS._error_cache)
    with GENERATOR_STATS.silence():
        for endpoint in _endpoints:
            names |= _operation_query_parameters(generator, endpoint, view_class, method)
    GENERATOR_STATS._warn_cache.clear()
    GENERATOR_STATS._warn_cache.update(warnings)
    GENERATOR_STATS._error_cache.clear()
    GENERATOR_STATS._error_cache.update(errors)
    return frozenset(names)


def _operation_query_parameters(
    generator: Any, endpoint: tuple[str, str, str, Any], view_class: type, method: str
) -> set[str]:
    from drf_spectacular.plumbing import ComponentRegistry
    from drf_spectacular.settings import spectacular_settings

    path, path_regex, endpoint_method, callback = endpoint
    if endpoint_method != method or getattr(callback, "cls", None) is not view_class:
        return set()
    view = generator.create_view(callback, endpoint_method)
    view.request = spectacular_settings.GET_MOCK_REQUEST(endpoint_method, path, view, None)
    schema = view.schema
    schema.registry = ComponentRegistry()
    schema.path, schema.path_regex, schema.method = path, path_regex, endpoint_method
    schema.path_prefix = spectacular_settings.SCHEMA_PATH_PREFIX
    if schema.is_excluded():
        return set()
    return {p["name"] for p in schema._get_parameters() if p.get("in") == "query"}
