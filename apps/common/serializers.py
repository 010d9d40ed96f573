"""Base serializers for every API input and output shape: the input rules of ADR 0015, applied to every field.

Every serializer in Keel derives from `Serializer` or `ModelSerializer` here (ruff's banned-API rule holds
it), and `harden_field` runs over each writable field when the serializer builds its fields — so a field
added tomorrow is covered without anyone remembering to be careful (issue 8, kinds 1, 3, 5):

- **text** (`CharField` and its kin: e-mail, slug, regex, URL…): a JSON string only (DRF would turn `123` into
  `"123"`: a wrong type is refused, not coerced; form and multipart values are strings anyway), and no control
  characters (`apps.common.text.control_character_error`; a field declared with `allow_newlines=True` keeps CR/LF);
- **booleans** (`BooleanField`): a JSON `true` or `false` only (DRF would take `"yes"`, `1`, `"on"`, `"0"`… and turn
  them into a boolean the partner may not have meant); in a query string or a form body, where every value is text,
  exactly `true` or `false`;
- **e-mail** (`EmailField`): Django's `EmailValidator` without the `localhost` allow-list;
- **integers** (`IntegerField`): bounded to the signed 64-bit range of the columns they end up in, so an id
  of 10^30 in a body or query is 422 naming the field, never an overflow;
- **lists and dicts**: their child field is hardened the same way;
- **the body itself**: a field the serializer does not take, or only shows, is 422 naming it, never ignored.

Money fields are `apps.common.fields.MoneyField` (the grammar of ADR 0014); decimals keep DRF's
`max_digits` / `decimal_places` checks, which bound them too.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

from django.core.validators import EmailValidator, MaxValueValidator, MinValueValidator
from django.http import QueryDict
from rest_framework import serializers
from rest_framework.utils.serializer_helpers import BindingDict

from apps.common.ids import BIGINT_MAX, BIGINT_MIN
from apps.common.text import EMAIL_VALIDATOR, UNKNOWN_FIELD_MESSAGE, ControlCharacterValidator

HARDENED_FLAG = "_keel_hardened"
_MAX_MESSAGE = f"Ensure this value is less than or equal to {BIGINT_MAX}."
_MIN_MESSAGE = f"Ensure this value is greater than or equal to {BIGINT_MIN}."


def harden_field(field: serializers.Field) -> serializers.Field:  # type: ignore[type-arg]
    """Apply the input rules to one field (idempotent; read-only fields are left alone). Returns `field`."""
    if getattr(field, HARDENED_FLAG, False) or field.read_only:
        return field
    if isinstance(field, serializers.CharField):
        field.to_internal_value = _strings_only(field.to_internal_value)  # type: ignore[method-assign,assignment]
        allow_newlines = bool(getattr(field, "allow_newlines", False))
        field.validators.append(ControlCharacterValidator(allow_newlines=allow_newlines))
    if isinstance(field, serializers.BooleanField):
        field.to_internal_value = _booleans_only(field)  # type: ignore[method-assign,assignment]
    if isinstance(field, serializers.EmailField):
        field.validators = [v for v in field.validators if not isinstance(v, EmailValidator)]
        field.validators.append(EMAIL_VALIDATOR)
    if isinstance(field, serializers.IntegerField):
        if field.max_value is None or field.max_value > BIGINT_MAX:
            field.max_value = BIGINT_MAX
            field.validators.append(MaxValueValidator(BIGINT_MAX, message=_MAX_MESSAGE))
        if field.min_value is None or field.min_value < BIGINT_MIN:
            field.min_value = BIGINT_MIN
            field.validators.append(MinValueValidator(BIGINT_MIN, message=_MIN_MESSAGE))
    if isinstance(field, serializers.ChoiceField):
        field.error_messages["invalid_choice"] = choices_message(field.choices)
    if isinstance(field, (serializers.ListField, serializers.DictField)):
        harden_field(field.child)
    setattr(field, HARDENED_FLAG, True)
    return field


def _strings_only(to_internal_value: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """`to_internal_value` of a text field that refuses anything but a string (DRF's "Not a valid string.")."""

    def strict(data: Any) -> Any:
        if not isinstance(data, str):
            raise serializers.ValidationError("Not a valid string.", code="invalid")
        return to_internal_value(data)

    return strict


BOOLEAN_MESSAGE = "Must be a boolean: true or false."
MAX_CHOICES_LISTED = 30


def choices_message(choices: Any) -> str:
    """The 422 detail of a value outside an enum, in a body or a query string: "Must be one of: a, b, c." — the
    valid values themselves (at most MAX_CHOICES_LISTED, then "…"), never the value sent. `choices`: a mapping of
    value to label, (value, label) pairs or plain values; the empty choice a form adds is left out."""
    if isinstance(choices, dict):
        values = list(choices)
    else:
        values = [choice[0] if isinstance(choice, (tuple, list)) else choice for choice in choices]
    shown = [str(value) for value in values if value not in ("", None)]
    listed = ", ".join(shown[:MAX_CHOICES_LISTED]) + (", …" if len(shown) > MAX_CHOICES_LISTED else "")
    return f"Must be one of: {listed}."


def _booleans_only(field: serializers.BooleanField) -> Callable[[Any], bool]:
    """`to_internal_value` of a boolean field: `True`/`False` from JSON; from a query string or a form body (the
    root serializer's data is a `QueryDict`, all text) the strings `true`/`false`. Anything else → `BOOLEAN_MESSAGE`."""

    def strict(data: Any) -> bool:
        if isinstance(data, bool):
            return data
        if isinstance(getattr(field.root, "initial_data", None), QueryDict) and data in ("true", "false"):
            return data == "true"
        raise serializers.ValidationError(BOOLEAN_MESSAGE, code="invalid")

    return strict


READ_ONLY_FIELD_MESSAGE = "Read-only: this field cannot be set."


class HardenedFieldsMixin:
    # A body naming a field the serializer does not take, or one it only shows (read-only), is refused, 422 per
    # field, rather than silently dropped: a partner who sent `employers` or `secret` believes it was applied
    # (newcomer trial; SPEC §2). Serializers of query strings, which share the query with `cursor`, `limit` and
    # the filters, set this False.
    refuse_unknown_fields = True

    def get_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = super().get_fields()  # type: ignore[misc]
        for field in fields.values():
            harden_field(field)
        return fields

    def to_internal_value(self, data: Any) -> Any:
        if self.refuse_unknown_fields and isinstance(data, Mapping):
            fields = self.fields  # type: ignore[attr-defined]
            errors = {
                str(name)[:64]: [READ_ONLY_FIELD_MESSAGE if name in fields else UNKNOWN_FIELD_MESSAGE]
                for name in list(data)[:1000]
                if name not in fields or fields[name].read_only
            }
            if errors:
                raise serializers.ValidationError(dict(list(errors.items())[:20]))
        return super().to_internal_value(data)  # type: ignore[misc]


# No docstrings on the two bases: drf-spectacular would publish them as the description of every schema
# component whose serializer has none of its own.
class Serializer(HardenedFieldsMixin, serializers.Serializer):  # type: ignore[type-arg]
    pass


class ModelSerializer(HardenedFieldsMixin, serializers.ModelSerializer):  # type: ignore[type-arg]
    pass


class FieldsReusedPerThreadMixin:
    """For a **flat** input serializer on a hot path (no nested serializer among its fields): its bound, hardened
    fields are built once per thread and class and lent to each new instance (their `parent` re-pointed to it),
    instead of DRF deep-copying every declared field for every instance — ≈ 1,150 of the ≈ 13,000 profiler events
    of a `POST /loan-applications` (issue 15). Safe because a field keeps no state of a validation (errors and
    validated data live on the serializer) and one thread validates one request at a time (WSGI threads; under
    ASGI, Django runs sync views one at a time on one thread). Not for serializers whose fields are serializers
    (they keep `_errors`) or that change `self.fields` per instance."""

    _lent = threading.local()

    @cached_property
    def fields(self) -> Any:
        by_class: dict[type, Any] | None = getattr(self._lent, "by_class", None)
        if by_class is None:
            by_class = self._lent.by_class = {}
        fields = by_class.get(type(self))
        if fields is None:
            fields = BindingDict(self)  # type: ignore[arg-type]
            for name, field in self.get_fields().items():  # type: ignore[attr-defined]
                fields[name] = field
            by_class[type(self)] = fields
        else:
            # The map and its fields point at this instance only: neither keeps an earlier request's serializer
            # (its data, its context with the request) alive for the thread's lifetime.
            fields.serializer = self
            for field in fields.values():
                field.parent = self
        return fields
