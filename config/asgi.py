"""ASGI entry point: the whole app under one ASGI server (uvicorn), so the live event stream
(`/api/v1/events/stream`, an async view) holds no worker thread while it waits (ADR 0050)."""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

application = get_asgi_application()

# As in config/wsgi.py (ADR 0013): what is loaded at start-up lives as long as the process; keep it out of the
# collector's generations so full collections do not stall streams or requests.
gc.collect()
gc.freeze()
