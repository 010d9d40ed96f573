"""The Celery app (`config.celery:app`).

`celery -A config worker -B` runs every queue and beat in one process (what `make run` does); production
runs one worker pool per queue (`-Q outbox`, `-Q endorsements`, …). Queues are declared by the outbox topic
registry, so a new topic only has to name its queue.
"""

import gc
import os

from celery import Celery
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

# Keel's broker connection: quick reconnects after a broker outage (config/broker.py, ADR 0024).
app = Celery("keel", amqp="config.broker:AMQP")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_init.connect
def _freeze_the_loaded_heap(**_: object) -> None:
    """As in config/wsgi.py (ADR 0013): what is loaded at start lives as long as the worker, so take it out of
    the garbage collector's generations; full collections then walk only what tasks allocate (and a prefork
    pool's children share those pages instead of copying them)."""
    gc.collect()
    gc.freeze()
