from __future__ import annotations

import json
import logging

import structlog
from django.conf import settings

from apps.common.logging import logging_config, scrub_text


def _format(record_msg: str, **extra) -> dict:
    config = logging_config(level="INFO", json=True)
    formatter_conf = dict(config["formatters"]["structured"])
    factory = formatter_conf.pop("()")
    formatter = factory(**formatter_conf)
    record = logging.LogRecord("keel.test", logging.INFO, __file__, 1, record_msg, None, None)
    for k, v in extra.items():
        setattr(record, k, v)
    return json.loads(formatter.format(record))


def test_log_line_is_one_json_object_with_the_bound_request_id():
    structlog.contextvars.bind_contextvars(request_id="req-123")
    try:
        line = _format("hello")
    finally:
        structlog.contextvars.clear_contextvars()

    assert line["event"] == "hello"
    assert line["request_id"] == "req-123"
    assert line["level"] == "info"


def test_pan_email_and_keys_are_scrubbed_from_log_text():
    text = "pan ABCDE1234F mail a.b@c.example key abcdefgh." + "x" * 32 + " whsec_c2VjcmV0"

    scrubbed = scrub_text(text)

    assert "ABCDE1234F" not in scrubbed
    assert "a.b@c.example" not in scrubbed
    assert "x" * 32 not in scrubbed
    assert "c2VjcmV0" not in scrubbed


def test_sensitive_keys_are_redacted_in_structured_events():
    from apps.common.logging import scrub_processor

    event = scrub_processor(None, "info", {"event": "x", "pan_number": "ABCDE1234F", "nested": {"email": "e@x.io"}})

    assert event["pan_number"] == "[redacted]"
    assert event["nested"]["email"] == "[redacted]"


def test_settings_log_as_json():
    assert settings.LOGGING["handlers"]["console"]["formatter"] == "structured"


def test_task_loggers_follow_their_own_level_and_requests_keep_theirs():
    """`make run` sets KEEL_WORKER_LOG_LEVEL=WARNING: Celery's and the task events' INFO lines (beat queues jobs
    every second) are dropped while the web process still logs each request at INFO."""
    config = logging_config(level="INFO", json=True, task_level="WARNING")
    assert config["root"]["level"] == "INFO"
    assert config["loggers"]["celery"] == {"level": "WARNING"}
    assert config["loggers"]["django_structlog.celery"] == {"level": "WARNING"}
    assert logging_config(level="INFO", json=True)["loggers"]["celery"] == {"level": "INFO"}


def test_a_long_logged_string_is_cut_before_it_is_scrubbed_and_addresses_in_it_are_still_found():
    """Newcomer trial: a 40 KB query string in the request log line cost 12 s in the e-mail pattern (a run with
    no "@" was rescanned from each character). A logged string is cut to MAX_LOGGED_TEXT with the rest counted,
    and the pattern starts a match only where a run of address characters starts."""
    from apps.common.logging import MAX_LOGGED_TEXT, scrub_processor

    long = "x" * 40_000
    logged = scrub_processor(None, "info", {"event": "request_started", "request": long, "extra": [long]})
    cut = "x" * MAX_LOGGED_TEXT + f"…[{40_000 - MAX_LOGGED_TEXT} more characters]"
    assert logged == {"event": "request_started", "request": cut, "extra": [cut]}
    assert scrub_text(long) == long  # the scrubber itself keeps everything (the insurer exchange log caps its own)
    assert scrub_text("/health?x=" + "a" * 3000 + " to asha.rao+hr@example.co.in") == (
        "/health?x=" + "a" * 3000 + " to [email]"
    )
    assert scrub_text("a.b@c.d, e@f.gh and a@b (none)") == "[email], [email] and a@b (none)"


def test_a_suspicious_request_is_one_warning_line_without_its_traceback():
    """Newcomer trial: `Host: evil` wrote two ~30-line tracebacks per request at ERROR; now one warning line."""
    import sys

    from django.core.exceptions import DisallowedHost

    from apps.common.logging import SuspiciousRequestFilter

    try:
        raise DisallowedHost("Invalid HTTP_HOST header: 'evil'.")
    except DisallowedHost:
        error = sys.exc_info()
        suspicious = logging.LogRecord("django.security.DisallowedHost", logging.ERROR, "", 0, "bad host", (), error)
    try:
        raise ValueError("a bug")
    except ValueError:
        bug = logging.LogRecord("django.request", logging.ERROR, "", 0, "boom", (), sys.exc_info())

    assert SuspiciousRequestFilter().filter(suspicious) is True
    assert (suspicious.exc_info, suspicious.levelname, suspicious.levelno) == (None, "WARNING", logging.WARNING)
    assert SuspiciousRequestFilter().filter(bug) is True
    assert bug.exc_info is not None  # a real error keeps its traceback
    assert bug.levelname == "ERROR"
    config = logging_config(level="INFO", json=True)
    assert config["handlers"]["console"]["filters"] == ["suspicious_request"]
    assert config["loggers"]["django"] == {"handlers": [], "propagate": True}  # not Django's plain console too
