"""Developer machine: `make run`. Embedded defaults unless DATABASE_URL / REDIS_URL are set."""

from .base import *  # noqa: F403
from .base import env

DEBUG = env.bool("DJANGO_DEBUG", default=True)
SANDBOX_INSURER_ENABLED = env.bool("SANDBOX_INSURER_ENABLED", default=True)
# A developer's receiver (`manage.py webhook_listen`) runs on this machine over http, whatever DEBUG says.
WEBHOOKS_ALLOW_LOCAL_HTTP = True
