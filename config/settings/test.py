"""Test settings: PostgreSQL through DATABASE_URL (CI always sets it), fast hashers, no real I/O."""

import os

from .base import *  # noqa: F403
from .base import CACHES, DATABASES, OUTBOX, REDIS_URL, WEBHOOKS, env

DEBUG = False
SANDBOX_INSURER_ENABLED = True
SECRET_KEY = "test-secret-key-not-for-production-" + "x" * 20
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Tests drive the outbox themselves (relay + handlers called directly); nothing is sent to a broker.
CELERY_BROKER_URL = env.str("TEST_CELERY_BROKER_URL", default="memory://")
CELERY_BROKER_TRANSPORT_OPTIONS = {}
OUTBOX = {**OUTBOX, "NUDGE_ON_COMMIT": False}
# Production's URL rules by default; tests that run a loopback receiver turn local http on for themselves.
WEBHOOKS = {**WEBHOOKS, "NUDGE_ON_COMMIT": False}
WEBHOOKS_ALLOW_LOCAL_HTTP = False
if REDIS_URL:
    # Tests share the machine's Redis: use their own database number and prefix.
    CACHES["default"]["KEY_PREFIX"] = "keel-test"
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
LOG_JSON = True

# Parallel test runs on one machine (several developers' sessions, xdist) must not share a test database.
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    DATABASES["default"].setdefault("TEST", {})
    DATABASES["default"]["TEST"]["NAME"] = env.str(
        "TEST_DATABASE_NAME", default=f"test_{DATABASES['default']['NAME']}_{os.getpid()}"
    )
