"""Which file-job conditions are news (issue 11).

The result-file import and the sandbox file insurer run every 2 s. A condition that persists — an inbound
folder that cannot be reached, an insurer whose folder is misconfigured, a manifest that cannot be read or
whose data file has not arrived yet — would otherwise write a job run (start + end events, each sealed into
the audit chain) and a log warning on every tick. A condition is *news* the first time it is seen, when its
detail changes, and again once `CONDITION_REPEAT_SECONDS` (default 1 h) have passed since it was last
reported, so it stays visible in the job log without flooding it; clearing it (the folder works again) lets
the next occurrence be news at once.

Remembered in the shared cache (Redis in production, a file cache under `make run`) so every worker agrees.
If the cache cannot be used the condition counts as news: recording too often beats hiding a problem.
"""

from __future__ import annotations

import hashlib

import structlog
from django.core.cache import cache

from apps.insurers.conf import gateway_setting

log = structlog.get_logger(__name__)
KEY_PREFIX = "insurers:file-condition:"


def _key(job: str, subject: str, condition: str) -> str:
    return KEY_PREFIX + hashlib.sha256(f"{job}\0{subject}\0{condition}".encode()).hexdigest()[:40]


def condition_is_news(*, job: str, subject: str, condition: str, detail: str = "") -> bool:
    """True when `condition` of `subject` (an insurer code, or `<code>/<file name>`) in `job` should be
    recorded and warned about now: not reported within `CONDITION_REPEAT_SECONDS`, or with another `detail`
    (e.g. a different error message). Remembers it as reported."""
    fingerprint = hashlib.sha256(detail.encode()).hexdigest()[:16]
    key = _key(job, subject, condition)
    try:
        if cache.get(key) == fingerprint:
            return False
        cache.set(key, fingerprint, timeout=int(gateway_setting("CONDITION_REPEAT_SECONDS")))
    except Exception as exc:  # the cache is an optimisation of the job log, never a reason to fail the job
        log.info("insurers.file_condition_cache_unavailable", error=str(exc))
    return True


def condition_cleared(*, job: str, subject: str, conditions: tuple[str, ...]) -> None:
    """Forget `conditions` of `subject`: the next occurrence is news at once."""
    try:
        cache.delete_many([_key(job, subject, condition) for condition in conditions])
    except Exception as exc:
        log.info("insurers.file_condition_cache_unavailable", error=str(exc))
