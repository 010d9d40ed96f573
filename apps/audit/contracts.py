"""The names other apps write into the audit streams (issue 9: names in one list)."""

from __future__ import annotations

from django.db.models import TextChoices


class PiiAction(TextChoices):
    """`PiiAccessEvent.action`: what a caller did with a PII field (`pii_access_record(action=…)`)."""

    DECRYPT = "decrypt"
    MASK = "mask"
    REVEAL = "reveal"
