"""Free text at the edges: one rule for every text field of every endpoint and CSV column.

PostgreSQL refuses NUL in text, and other C0/C1 control characters (and lone surrogates, which cannot be
encoded) have no place in names, codes or e-mails: they are rejected with a 422 naming the field rather than
reaching the database (issue 8, kind 3). Tab is refused as well; free-text notes that need newlines say so.
"""

from __future__ import annotations

import re

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_EXCEPT_NEWLINES_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
CONTROL_CHARACTER_MESSAGE = "Must not contain control characters."


def control_character_error(value: str, *, allow_newlines: bool = False) -> str | None:
    """The error message for `value` if it holds a control character (or a lone surrogate), else None."""
    pattern = _CONTROL_EXCEPT_NEWLINES_RE if allow_newlines else _CONTROL_RE
    return CONTROL_CHARACTER_MESSAGE if pattern.search(value) else None
