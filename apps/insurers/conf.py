"""This app's settings, each with a default so the app works before the project sets them.

`settings.INSURER_GATEWAY` may override any of: CONNECT_TIMEOUT_SECONDS, READ_TIMEOUT_SECONDS,
CIRCUIT_FAIL_MAX, CIRCUIT_RESET_SECONDS, HALF_OPEN_PROBES, HALF_OPEN_SUCCESSES,
CALLBACK_MAX_EVENTS, RESULT_FILE_GRACE_SECONDS, CONDITION_REPEAT_SECONDS. `settings.SANDBOX_INSURER_ENABLED` turns the
sandbox insurer's HTTP routes on (default: on when DEBUG).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    "CONNECT_TIMEOUT_SECONDS": 3.0,
    "READ_TIMEOUT_SECONDS": 10.0,
    "CIRCUIT_FAIL_MAX": 5,
    "CIRCUIT_RESET_SECONDS": 30.0,
    # Half-open: how many probe calls at a time, and how many successes in a row close the circuit.
    "HALF_OPEN_PROBES": 1,
    "HALF_OPEN_SUCCESSES": 2,
    # Longest batch of events one callback request may carry (bounded input).
    "CALLBACK_MAX_EVENTS": 1000,
    # A result file's manifest whose data file is still missing this long after the manifest was written
    # (its mtime) is quarantined (issue 11); before that the data file may still be arriving.
    "RESULT_FILE_GRACE_SECONDS": 600.0,
    # A file-job condition already recorded (an unreachable or misconfigured folder, an unreadable manifest)
    # is not recorded or warned about again for this long, so a 2 s beat does not fill the job log.
    "CONDITION_REPEAT_SECONDS": 3600.0,
}


def gateway_setting(name: str) -> Any:
    overrides: dict[str, Any] = getattr(settings, "INSURER_GATEWAY", {}) or {}
    return overrides.get(name, DEFAULTS[name])


def sandbox_enabled() -> bool:
    return bool(getattr(settings, "SANDBOX_INSURER_ENABLED", settings.DEBUG))


def redis_url() -> str:
    return str(getattr(settings, "REDIS_URL", "") or "")


def key_prefix() -> str:
    prefix = settings.CACHES.get("default", {}).get("KEY_PREFIX") or "keel"
    return f"{prefix}:insurers"
