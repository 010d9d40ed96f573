"""Insurer error messages → a `RejectionClass`, to decide retry vs reject and to feed analytics.

Insurers answer in free text. The rules are keyword rules, checked in order (the first match wins), so a
message such as "duplicate: date of birth does not match" counts as a duplicate. "age" is matched as a word
so that "message", "page" or "manager" do not count.
"""

from __future__ import annotations

import re

from apps.insurers.contracts import RejectionClass

_RULES: tuple[tuple[re.Pattern[str], RejectionClass], ...] = (
    (re.compile(r"already\s+(exists|enrolled|covered|added)|duplicate", re.I), RejectionClass.DUPLICATE_MEMBER),
    (re.compile(r"mismatch|does\s+not\s+match|do\s+not\s+match|doesn't\s+match", re.I), RejectionClass.DATA_MISMATCH),
    (re.compile(r"\b(age|aged|ages|over-?age|under-?age)\b", re.I), RejectionClass.AGE_LIMIT),
    (re.compile(r"document", re.I), RejectionClass.DOCUMENTS_REQUIRED),
    (
        re.compile(
            r"time(d)?\s*-?out|temporar|unavailable|try\s+again|too\s+many\s+requests|rate\s+limit|"
            r"\b5\d\d\b|gateway|overloaded|connection",
            re.I,
        ),
        RejectionClass.TRANSIENT,
    ),
)


def classify_insurer_error(message: str) -> RejectionClass:
    for pattern, rejection_class in _RULES:
        if pattern.search(message or ""):
            return rejection_class
    return RejectionClass.UNKNOWN
