from __future__ import annotations

import random

from django.conf import settings


def full_jitter_delay(attempt: int) -> float:
    """Exponential backoff with full jitter (AWS): uniform(0, min(cap, base · 2^attempt))."""
    base = float(settings.OUTBOX["BACKOFF_BASE_SECONDS"])
    cap = float(settings.OUTBOX["BACKOFF_CAP_SECONDS"])
    return random.uniform(0, min(cap, base * (2 ** min(attempt, 32))))  # noqa: S311 - jitter, not crypto
