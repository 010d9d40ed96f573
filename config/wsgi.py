import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")
application = get_wsgi_application()

# Everything loaded so far (Django, the apps, their modules) lives as long as the process: move it out of the
# garbage collector's generations so a full collection during a request only walks what requests allocate
# (ADR 0013). Without it, gen-2 collections over the whole heap show up as tens-of-ms stalls in the latency tail.
from apps.common.heap import heap_freeze  # noqa: E402 - after the application is built

heap_freeze()
