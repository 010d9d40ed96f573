"""Production: every secret from the environment, HTTPS only, PostgreSQL + Redis required."""

from .base import *  # noqa: F403
from .base import env

DEBUG = False
SECRET_KEY = env.str("DJANGO_SECRET_KEY")
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS")

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^ready$", r"^metrics$"]
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=31_536_000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
X_FRAME_OPTIONS = "DENY"
# Webhook targets: https and public addresses only, never a local receiver (SPEC §10).
WEBHOOKS_ALLOW_LOCAL_HTTP = False

# Wake-ups (ADR 0048): the production layout runs the `outbox_relay` and `webhook_dispatch` processes, woken by
# PostgreSQL NOTIFY at each commit (triggers of outbox migration 0002 and partners migration 0002), with beat's
# 1 s Celery runs as the safety net. The web process sends no Celery nudge on commit: the NOTIFY is already
# there, and the nudge (a Redis SET NX and, when it wins, a Celery publish) was 30 % of the instructions of
# `POST /endorsements` (bench/request_cost.py). Set these to true where those two processes do not run.
OUTBOX = {**OUTBOX, "NUDGE_ON_COMMIT": env.bool("OUTBOX_NUDGE_ON_COMMIT", default=False)}
WEBHOOKS = {**WEBHOOKS, "NUDGE_ON_COMMIT": env.bool("WEBHOOKS_NUDGE_ON_COMMIT", default=False)}
