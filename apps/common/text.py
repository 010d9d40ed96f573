"""Free text at the edges: one rule for every text field of every endpoint and CSV column.

PostgreSQL refuses NUL in text, and other C0/C1 control characters (and lone surrogates, which cannot be
encoded) have no place in names, codes or e-mails: they are rejected with a 422 naming the field rather than
reaching the database (issue 8, kind 3). Tab is refused as well; free-text notes that need newlines say so.
"""

from __future__ import annotations

import re

from django.core.exceptions import ValidationError
from django.core.validators import EmailValidator
from django.utils.deconstruct import deconstructible

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_EXCEPT_NEWLINES_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
CONTROL_CHARACTER_MESSAGE = "Must not contain control characters."


def control_character_error(value: str, *, allow_newlines: bool = False) -> str | None:
    """The error message for `value` if it holds a control character (or a lone surrogate), else None."""
    pattern = _CONTROL_EXCEPT_NEWLINES_RE if allow_newlines else _CONTROL_RE
    return CONTROL_CHARACTER_MESSAGE if pattern.search(value) else None


#: RFC 5321 §4.5.3.1.1: a local part (before the `@`) holds at most 64 octets.
MAX_EMAIL_LOCAL_PART = 64


@deconstructible
class KeelEmailValidator(EmailValidator):
    """Django's `EmailValidator` plus RFC 5321's 64-octet limit on the local part, which Django does not
    check (a 65-character local part was stored, then served back failing the schema's `format: email`;
    newcomer trial of issue 8)."""

    def __call__(self, value: str | None) -> None:
        super().__call__(value)
        if value is not None and len(value.rpartition("@")[0].encode()) > MAX_EMAIL_LOCAL_PART:
            raise ValidationError(self.message, code=self.code, params={"value": value})


#: The one e-mail rule of the API (issue 8, kind 5): Django's validator **without** its default
#: `localhost` allow-list, so `x@localhost`, `a@b.c` and `dev..sen@example.com` are all refused; local
#: parts longer than 64 octets too.
EMAIL_VALIDATOR = KeelEmailValidator(allowlist=[])


@deconstructible
class ControlCharacterValidator:
    """A Django/DRF validator wrapping `control_character_error` (raises `ValidationError` with its message)."""

    def __init__(self, *, allow_newlines: bool = False) -> None:
        self.allow_newlines = allow_newlines

    def __call__(self, value: object) -> None:
        if isinstance(value, str) and (message := control_character_error(value, allow_newlines=self.allow_newlines)):
            raise ValidationError(message, code="control_characters")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ControlCharacterValidator) and other.allow_newlines == self.allow_newlines

    def __hash__(self) -> int:
        return hash((ControlCharacterValidator, self.allow_newlines))


# A body key an endpoint does not take (serializers: `apps.common.serializers`; endorsement bodies:
# `apps.endorsements.parsing`): one message, so a client reads the same refusal everywhere.
UNKNOWN_FIELD_MESSAGE = "Unknown field: this body takes no such field."

# A query parameter an operation does not take (`apps.common.query`, the event stream): the body's rule, in the
# query string — refused by name, never ignored (ADR 0064).
UNKNOWN_PARAMETER_MESSAGE = "Unknown parameter: this operation takes no such query parameter."
EMPTY_PARAMETER_MESSAGE = "Empty value: give a value, or leave the parameter out."
