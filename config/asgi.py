"""ASGI entry point: the whole app under one ASGI server (uvicorn), so the live event stream
(`/api/v1/events/stream`, an async view) holds no worker thread while it waits (ADR 0050). Django's handler
with a bound on request bodies, chunked ones included (`apps.common.asgi`, ADR 0065)."""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
django.setup(set_prefix=False)  # as `django.core.asgi.get_asgi_application` does, before the app's modules load

from apps.common.asgi import BodyLimitASGIHandler  # noqa: E402 - needs the apps loaded (above)
from apps.common.heap import heap_freeze  # noqa: E402

application = BodyLimitASGIHandler()

# As in config/wsgi.py (ADR 0013): what is loaded at start-up lives as long as the process; keep it out of the
# collector's generations so full collections do not stall streams or requests.
heap_freeze()
