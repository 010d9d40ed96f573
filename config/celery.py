"""The Celery app (`config.celery:app`).

`celery -A config worker -B` runs every queue and beat in one process (what `make run` does); production
runs one worker pool per queue (`-Q outbox`, `-Q endorsements`, …). Queues are declared by the outbox topic
registry, so a new topic only has to name its queue.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

app = Celery("keel")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
