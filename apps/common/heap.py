"""Keeping the start-up heap out of the garbage collector (ADR 0013, ADR 0062).

Everything a process has loaded once it is ready to serve — Django, the apps, their modules, the settings, the app
registry — lives as long as the process. Left in the collector's generations, every full (generation-2) collection
walks all of it: in `manage.py webhook_dispatch` at 1,000 deliveries a second such a collection took 90–130 ms,
the whole p99 tail of commit → delivered (docs/benchmarks.md, 2026-12-02). `gc.freeze()` moves it to the permanent
generation; collections then walk only what the work allocates.
"""

from __future__ import annotations

import gc


def heap_freeze() -> None:
    """Collect once, then freeze every object alive now (`gc.freeze`). Call when the process is ready to serve:
    the ASGI/WSGI entry after the app is built, a Celery worker at `worker_init`, a long-running command before
    its loop."""
    gc.collect()
    gc.freeze()
