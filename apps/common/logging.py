"""JSON logs, one object per line, with PII and secrets scrubbed before anything is written.

Every line carries the `request_id` (bound by django-structlog's request middleware) or the
`correlation_id` (bound by the outbox consumer from the message headers), so one partner request can be
followed through the outbox into workers and outbound calls.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import MutableMapping
from typing import Any

import structlog

# Keys whose values are never logged, wherever they appear in an event dict.
SENSITIVE_KEYS = frozenset(
    {
        "pan",
        "pan_number",
        "password",
        "secret",
        "api_key",
        "key",
        "authorization",
        "token",
        "email",
        "first_name",
        "last_name",
        "full_name",
        "name",
        "phone_number",
        "date_of_birth",
        "credentials",
        "callback_secret",
        "signing_secret",
        "cookie",
    }
)
REDACTED = "[redacted]"
# PAN shape anywhere inside a string; API keys ("prefix.secret") and whsec_ secrets likewise.
_PAN_RE = re.compile(r"\b[A-Z]{5}[0-9]{4}[A-Z]\b")
_WHSEC_RE = re.compile(r"whsec_[A-Za-z0-9+/=]+")
_APIKEY_RE = re.compile(r"\b[A-Za-z0-9]{8}\.[A-Za-z0-9]{32}\b")
# The lookbehind lets a match start only where a run of local-part characters starts: without it a long run with
# no "@" was rescanned from each of its characters — quadratic, 12 s of one request's log line for a 40 KB query
# string (newcomer trial, 2026-12-02). Every pattern here is linear in the text.
_EMAIL_RE = re.compile(r"(?<![\w.+-])[\w.+-]++@[\w-]+\.[\w.-]+")
MAX_LOGGED_TEXT = 4096  # characters of one logged string; the rest is cut (and counted) before scrubbing


def scrub_text(text: str) -> str:
    """`text` with PANs, API keys, `whsec_` secrets and e-mail addresses replaced; linear in its length (callers
    bound what they keep: a log line `MAX_LOGGED_TEXT` per string, an insurer exchange its own cap)."""
    text = _PAN_RE.sub("[pan]", text)
    text = _WHSEC_RE.sub("whsec_[redacted]", text)
    text = _APIKEY_RE.sub("[api-key]", text)
    return _EMAIL_RE.sub("[email]", text)


def cut_for_log(text: str) -> str:
    """`text` cut to MAX_LOGGED_TEXT characters, the rest counted ("…[N more characters]"): a log line is no
    place for a 100 KB query string (ADR 0068)."""
    if len(text) <= MAX_LOGGED_TEXT:
        return text
    return f"{text[:MAX_LOGGED_TEXT]}…[{len(text) - MAX_LOGGED_TEXT} more characters]"


def _scrub(value: Any, depth: int = 0) -> Any:
    if depth > 4:
        return value
    if isinstance(value, str):
        return scrub_text(cut_for_log(value))
    if isinstance(value, dict):
        return {k: (REDACTED if str(k).lower() in SENSITIVE_KEYS else _scrub(v, depth + 1)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub(v, depth + 1) for v in value]
    return value


def scrub_processor(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for k in list(event_dict):
        if k.lower() in SENSITIVE_KEYS:
            event_dict[k] = REDACTED
        else:
            event_dict[k] = _scrub(event_dict[k])
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        scrub_processor,
    ]


class SuspiciousRequestFilter(logging.Filter):
    """A request Django refuses as suspicious (`SuspiciousOperation`: a `Host` not in ALLOWED_HOSTS, a bad
    multipart boundary…) is the client's fault, answered 400: log it as one warning line, not as an error with
    the traceback Django attaches — a client sending `Host: x` on 100 connections wrote 200 tracebacks (newcomer
    trial, 2026-12-02). Every other record passes unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        from django.core.exceptions import SuspiciousOperation

        if record.exc_info and isinstance(record.exc_info[1], SuspiciousOperation):
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def logging_config(*, level: str, json: bool, task_level: str | None = None) -> dict[str, Any]:
    """dictConfig for every process: JSON (or console) lines through structlog at `level`; Celery's own loggers
    and django-structlog's task events at `task_level` (default `level`) — `make run` sets WARNING there, so
    beat's one-second jobs do not flood the terminal while requests still log at INFO."""
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
                "foreign_pre_chain": _shared_processors(),
            }
        },
        "filters": {"suspicious_request": {"()": SuspiciousRequestFilter}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "structured",
                "filters": ["suspicious_request"],
            }
        },
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            # Django's own default handlers (a plain console under DEBUG, mail to ADMINS) are dropped: its records
            # go through the root's structured, scrubbed handler like everyone's, once.
            "django": {"handlers": [], "propagate": True},
            "django.server": {"level": "WARNING"},
            "django.db.backends": {"level": "WARNING"},
            # asyncssh (SFTP insurer folders) logs every connection and channel at INFO.
            "asyncssh": {"level": "WARNING"},
            # Celery logs two lines per task at INFO; under load that is measurable work, so LOG_LEVEL governs it.
            "celery": {"level": task_level or level},
            "django_structlog.celery": {"level": task_level or level},
        },
    }


def configure_structlog(*, json: bool) -> None:
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def current_correlation_id() -> str | None:
    """The id of the request or message whose work is running now, if any."""
    ctx = structlog.contextvars.get_contextvars()
    value = ctx.get("correlation_id") or ctx.get("request_id")
    return str(value) if value else None


logger = logging.getLogger("keel")


class WarnAtMostEvery:
    """A warning for a dependency that fails on every request or commit while it is down (Redis, the broker):
    logged at the first failure — with the traceback when `exc_info` — and then at most once per `seconds`, each
    time with how many were left out since the last one (`suppressed`). An outage is one line every
    `seconds`, not a traceback per request. Thread-safe; one instance per event name (module level)."""

    def __init__(self, log: logging.Logger, event: str, *, seconds: float = 60.0) -> None:
        self.log, self.event, self.seconds = log, event, seconds
        self._lock = threading.Lock()
        self._last: float | None = None
        self._suppressed = 0

    def __call__(self, *, exc_info: bool = False, **extra: Any) -> bool:
        """Log now (returns True) unless one was logged less than `seconds` ago (counts it, returns False)."""
        now = time.monotonic()
        with self._lock:
            if self._last is not None and now - self._last < self.seconds:
                self._suppressed += 1
                return False
            self._last, suppressed, self._suppressed = now, self._suppressed, 0
        self.log.warning(self.event, exc_info=exc_info, extra={**extra, "suppressed": suppressed})
        return True
