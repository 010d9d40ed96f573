"""Which file-job conditions are news (issue 11).

The result-file import and the sandbox file insurer (`sandbox.files.while_folders_usable`) run every 2 s. A
condition that persists — an inbound folder that cannot be reached, an insurer whose folder is misconfigured, a
manifest that cannot be read or whose data file has not arrived yet — would otherwise write a job run (start + end
events, each sealed into the audit chain) and a log warning on every tick. A condition is *news* the first time it
is seen, when its detail changes, and again once `CONDITION_REPEAT_SECONDS` (default 1 h; a caller may pass its
own) have passed since it was last reported, so it stays visible in the job log without flooding it; clearing it
(the folder works again) lets the next occurrence be news at once.

Remembered in the shared cache (Redis in production, a file cache under `make run`) so every worker agrees.
If the cache cannot be used the condition counts as news: recording too often beats hiding a problem.
"""

from __future__ import annotations

import hashlib
import time
from typing import Literal

import structlog
from django.core.cache import cache

from apps.insurers.conf import gateway_setting

log = structlog.get_logger(__name__)
KEY_PREFIX = "insurers:file-condition:"


def _key(job: str, subject: str, condition: str) -> str:
    return KEY_PREFIX + hashlib.sha256(f"{job}\0{subject}\0{condition}".encode()).hexdigest()[:40]


# How long the cache remembers a reported condition (well beyond any repeat period): a condition that stops
# occurring without being cleared is forgotten after this.
REMEMBER_SECONDS = 7 * 24 * 3600


def condition_report(
    *, job: str, subject: str, condition: str, detail: str = "", repeat_seconds: float | None = None
) -> Literal["new", "repeat"] | None:
    """Whether `condition` of `subject` (an insurer code, or `<code>/<file name>`) in `job` should be reported now,
    and how: "new" the first time or with another `detail` (e.g. a different error message), "repeat" once
    `repeat_seconds` (default `CONDITION_REPEAT_SECONDS`) have passed since it was last reported, None otherwise.
    Remembers it as reported. Wall-clock seconds (`time.time`), shared by every process through the cache."""
    repeat = float(gateway_setting("CONDITION_REPEAT_SECONDS") if repeat_seconds is None else repeat_seconds)
    fingerprint = hashlib.sha256(detail.encode()).hexdigest()[:16]
    key = _key(job, subject, condition)
    now = time.time()
    try:
        seen = cache.get(key)
        if isinstance(seen, (list, tuple)) and len(seen) == 2 and seen[0] == fingerprint:
            if now - float(seen[1]) < repeat:
                return None
            outcome: Literal["new", "repeat"] = "repeat"
        else:
            outcome = "new"
        cache.set(key, (fingerprint, now), timeout=REMEMBER_SECONDS)
    except Exception as exc:  # the cache is an optimisation of the job log, never a reason to fail the job
        log.info("insurers.file_condition_cache_unavailable", error=str(exc))
        return "new"
    return outcome


def condition_is_news(*, job: str, subject: str, condition: str, detail: str = "") -> bool:
    """True when `condition_report` says the condition should be reported now (new or due again)."""
    return condition_report(job=job, subject=subject, condition=condition, detail=detail) is not None


def condition_cleared(*, job: str, subject: str, conditions: tuple[str, ...]) -> bool:
    """Forget `conditions` of `subject`: the next occurrence is news at once. True if one of them was remembered
    (it had been reported and is now over)."""
    keys = [_key(job, subject, condition) for condition in conditions]
    try:
        remembered = cache.get_many(keys)
        if remembered:
            cache.delete_many(keys)
        return bool(remembered)
    except Exception as exc:
        log.info("insurers.file_condition_cache_unavailable", error=str(exc))
        return False
