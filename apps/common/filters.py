"""Query-string filters with the input rules of ADR 0015 (issue 8, kinds 1 and 3).

Every list endpoint's FilterSet derives from `FilterSet` here: text filters refuse control characters, and
number filters are bounded to the bigint range, so `?employer=10**30` or `?employer=1e30` is 422 naming the
parameter rather than a silent empty page or an overflow. Id filters are `IdFilter`: a positive integer.
Boolean filters take exactly `true` or `false` (django-filter's widgets would read `maybe` as "no filter" and
`True`, `1`, `2` as a boolean): anything else is 422 naming the parameter (ADR 0064), as in a body.
"""

from __future__ import annotations

from typing import Any

import django_filters
from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator

from apps.common.ids import BIGINT_MAX, BIGINT_MIN
from apps.common.serializers import BOOLEAN_MESSAGE
from apps.common.text import ControlCharacterValidator


class IdFilter(django_filters.Filter):
    """An id in the query string: an integer from 1 to the bigint maximum, else 422."""

    field_class = forms.IntegerField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", BIGINT_MAX)
        super().__init__(*args, **kwargs)


class QueryBooleanField(forms.Field):
    """A query-string boolean: the text `true` or `false` (absent: no filter); anything else, the empty text
    included, is a `ValidationError` with `BOOLEAN_MESSAGE`."""

    widget = forms.TextInput

    def to_python(self, value: Any) -> bool | None:
        if value is None:
            return None
        if value in ("true", "false"):
            return bool(value == "true")
        raise forms.ValidationError(BOOLEAN_MESSAGE, code="invalid")


def harden_filter(filter_: django_filters.Filter) -> None:
    if isinstance(filter_, django_filters.BooleanFilter):
        filter_.field_class = QueryBooleanField
        filter_.extra["widget"] = forms.TextInput
    validators = list(filter_.extra.get("validators", []))
    if isinstance(filter_, django_filters.CharFilter):
        validators.append(ControlCharacterValidator())
    elif isinstance(filter_, django_filters.NumberFilter):
        validators += [MinValueValidator(BIGINT_MIN), MaxValueValidator(BIGINT_MAX)]
    if validators:
        filter_.extra["validators"] = validators


class FilterSet(django_filters.FilterSet):
    """`django_filters.FilterSet` whose filters follow the input rules (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for filter_ in self.filters.values():  # per-instance deep copies of the declared filters
            harden_filter(filter_)
