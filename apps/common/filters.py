"""Query-string filters with the input rules of ADR 0015 (issue 8, kinds 1 and 3).

Every list endpoint's FilterSet derives from `FilterSet` here: text filters refuse control characters, and
number filters are bounded to the bigint range, so `?employer=10**30` or `?employer=1e30` is 422 naming the
parameter rather than a silent empty page or an overflow. Id filters are `IdFilter`: a positive integer.
Boolean filters take exactly `true` or `false` (django-filter's widgets would read `maybe` as "no filter" and
`True`, `1`, `2` as a boolean): anything else is 422 naming the parameter (ADR 0064), as in a body.
A filter naming an object — `?employer=`, `?policy=`, `?batch=` — is a `VisibleIdFilter`: an object the caller
may not see is 404, as its path would be (SPEC §2 tenancy: "404 for everything of employer B"), never an empty
page that a foreign id would otherwise get (ADR 0064, amendment 2).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import django_filters
from django import forms
from django.core.validators import MaxValueValidator, MinValueValidator

from apps.common.errors import ProblemError
from apps.common.ids import BIGINT_MAX, BIGINT_MIN
from apps.common.serializers import BOOLEAN_MESSAGE, choices_message
from apps.common.text import ControlCharacterValidator


class IdFilter(django_filters.Filter):
    """An id in the query string: an integer from 1 to the bigint maximum, else 422."""

    field_class = forms.IntegerField

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("min_value", 1)
        kwargs.setdefault("max_value", BIGINT_MAX)
        super().__init__(*args, **kwargs)


class VisibleIdFilter(IdFilter):
    """An `IdFilter` naming an object the caller must be able to see: `visible_to(principal)` is the queryset of
    those objects (the app's selector, e.g. `employers_visible_to`); an id outside it is problem+json 404
    "No <noun> with this id." before any filtering (`FilterSet.filter_queryset`; one `EXISTS` query)."""

    def __init__(self, *args: Any, visible_to: Callable[[Any], Any], noun: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.visible_to = visible_to
        self.noun = noun

    def check_visible(self, principal: Any, value: int) -> None:
        """404 unless `principal` may see the object `value` (see the class docstring)."""
        if not self.visible_to(principal).filter(pk=value).exists():
            raise ProblemError(status_code=404, detail=f"No {self.noun} with this id.")


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
    if isinstance(filter_, (django_filters.ChoiceFilter, django_filters.MultipleChoiceFilter)):
        choices = filter_.extra.get("choices", ())
        choices = choices() if callable(choices) else choices
        filter_.extra["error_messages"] = {"invalid_choice": choices_message(choices)}
    validators = list(filter_.extra.get("validators", []))
    if isinstance(filter_, django_filters.CharFilter):
        validators.append(ControlCharacterValidator())
    elif isinstance(filter_, django_filters.NumberFilter):
        validators += [MinValueValidator(BIGINT_MIN), MaxValueValidator(BIGINT_MAX)]
    if validators:
        filter_.extra["validators"] = validators
    # A form field already built (schema generation reads `base_filters[…].field`, and the per-instance copies
    # inherit it) would ignore the rules above: make the filter build its field again, from `extra`.
    filter_.__dict__.pop("_field", None)


class FilterSet(django_filters.FilterSet):
    """`django_filters.FilterSet` whose filters follow the input rules (see the module docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for filter_ in self.filters.values():  # per-instance deep copies of the declared filters
            harden_filter(filter_)

    def filter_queryset(self, queryset: Any) -> Any:
        """django-filter's, after every `VisibleIdFilter` given a value checked its object is visible (else 404)."""
        for name, filter_ in self.filters.items():
            value = self.form.cleaned_data.get(name)
            if isinstance(filter_, VisibleIdFilter) and value is not None:
                filter_.check_visible(getattr(self.request, "user", None), value)
        return super().filter_queryset(queryset)
