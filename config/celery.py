"""The Celery app (`config.celery:app`).

`celery -A config worker` without `-Q` runs every queue; the production layout (`config/Procfile`, which `make
run` and docker-compose run; docs/architecture.md, "Processes"; ADR 0060) runs the loan steps' queues on a
worker of their own and every other queue on the main one. Queues are declared by the outbox topic registry, so
a new topic only has to name its queue.

Two worker-side settings live here because they decide how long a message waits once it is in the worker
(issue 15 part 3):

- **Database connections are kept per worker thread across tasks.** Celery's Django fix-up hands the thread's
  connection back before and after every task; with the pool (config/settings/base.py) the next task then
  checks one out again — a health-check round trip to PostgreSQL and Django's connection set-up, per task —
  and under the prefork pool it closes the child's whole pool each time (a fresh PostgreSQL connection per
  task). `KeelWorkerFixup` keeps the connection instead, and hands it back only when it cannot be trusted:
  an error occurred on it, a transaction was left open, autocommit is off, or it sat idle longer than
  `IDLE_CHECK_SECONDS` and a check (`is_usable`) fails.
- **A short GIL switch interval** (`KEEL_WORKER_SWITCH_INTERVAL`, default 0.5 ms instead of Python's 5 ms) in
  threads-pool workers: the task threads mostly wait on PostgreSQL and Redis, and the consumer thread that
  receives the next message (and the task thread it wakes) must not wait 5 ms for the interpreter while another
  thread compiles a query — as in `webhook_dispatch` (ADR 0046).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

from celery import Celery
from celery.fixups import django as celery_django
from celery.signals import worker_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.local")

# Keel's broker connection: quick reconnects after a broker outage (config/broker.py, ADR 0024).
app = Celery("keel", amqp="config.broker:AMQP")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

# A connection a worker thread kept longer than this without a task is checked before its next task (a
# PostgreSQL restart meanwhile would otherwise fail that task once).
IDLE_CHECK_SECONDS = 1.0
# Seconds; 0 keeps Python's default (5 ms).
DEFAULT_SWITCH_INTERVAL = 0.0005


# Not in celery-types' stubs.
DjangoWorkerFixup: Any = getattr(celery_django, "DjangoWorkerFixup")  # noqa: B009


class KeelWorkerFixup(DjangoWorkerFixup):  # type: ignore[misc]
    """Celery's Django worker fix-up, except that a task's database connection outlives the task (see the
    module doc). Cache connections are still closed after each task, as Celery does."""

    _local = threading.local()

    def __init__(self, app: Celery) -> None:
        # Celery's __init__ reads the app's configuration, i.e. Django's settings, which must not happen while
        # `config` is being imported (the settings modules live in it): deferred to `install` (worker_init).
        self.app = app

    def install(self) -> KeelWorkerFixup:
        """Read the configuration and connect the task signals (Celery calls this at `worker_init`)."""
        super().__init__(self.app)
        super().install()
        return self

    def on_task_prerun(self, sender: Any, **kwargs: Any) -> None:
        """Before a task: a connection idle longer than IDLE_CHECK_SECONDS is checked, and handed back to the
        pool (which replaces a dead one) if it no longer answers."""
        if getattr(sender.request, "is_eager", False):
            return
        idle_since = getattr(self._local, "idle_since", None)
        if idle_since is None or time.monotonic() - idle_since <= IDLE_CHECK_SECONDS:
            return
        for conn in self._db.connections.all(initialized_only=True):
            if conn.connection is not None and not conn.is_usable():
                self._hand_back(conn)

    def on_task_postrun(self, sender: Any, **kwargs: Any) -> None:
        """After a task: keep a clean connection for the thread's next task; hand back one that saw an error,
        is inside a transaction or is not in autocommit."""
        if getattr(sender.request, "is_eager", False):
            return
        for conn in self._db.connections.all(initialized_only=True):
            if conn.connection is None:
                continue
            if conn.errors_occurred or conn.in_atomic_block or not conn.get_autocommit():
                self._hand_back(conn)
        self._local.idle_since = time.monotonic()
        self.close_cache()

    def _hand_back(self, conn: Any) -> None:
        try:
            conn.close()  # with the pool: back to it (it discards a broken one); without: closed
        except (self.DatabaseError, *self.interface_errors):
            conn.connection = None


def keeps_connections() -> bool:
    """Whether worker threads keep their database connection across tasks (KEEL_WORKER_KEEP_DB_CONNECTIONS,
    default true; false restores Celery's per-task hand-back, for comparisons)."""
    return os.environ.get("KEEL_WORKER_KEEP_DB_CONNECTIONS", "true").lower() not in ("0", "false", "no", "off")


def _install_worker_fixup() -> None:
    """Give Celery's Django fix-up our worker fix-up before a worker installs it (at `worker_init`), unless
    KEEL_WORKER_KEEP_DB_CONNECTIONS is false (Celery's per-task hand-back; for comparisons)."""
    if not keeps_connections():
        return
    fixups: list[Any] = getattr(app, "_fixups", None) or []  # the fix-up instances Celery made for the app
    for fixup in fixups:
        if isinstance(fixup, celery_django.DjangoFixup):
            settable: Any = fixup  # the stubs declare `worker_fixup` read-only; Celery has a setter
            settable.worker_fixup = KeelWorkerFixup(app)


_install_worker_fixup()


def switch_interval() -> float:
    """The GIL switch interval (s) a threads-pool worker sets: KEEL_WORKER_SWITCH_INTERVAL, else 0.5 ms;
    0 keeps Python's default. Raises ValueError for a value that is not a number ≥ 0."""
    value = float(os.environ.get("KEEL_WORKER_SWITCH_INTERVAL", DEFAULT_SWITCH_INTERVAL))
    if value < 0:
        raise ValueError("KEEL_WORKER_SWITCH_INTERVAL must be ≥ 0 (seconds)")
    return value


@worker_init.connect
def _freeze_the_loaded_heap(**_: object) -> None:
    """As in config/wsgi.py (ADR 0013): what is loaded at start lives as long as the worker, so take it out of
    the garbage collector's generations; full collections then walk only what tasks allocate (and a prefork
    pool's children share those pages instead of copying them)."""
    from apps.common.heap import heap_freeze

    heap_freeze()


@worker_init.connect
def _short_switch_interval(sender: Any = None, **_: object) -> None:
    """Threads pool: hand the interpreter over sooner (see the module doc)."""
    pool = getattr(sender, "pool_cls", "")
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    if "thread" in name and (interval := switch_interval()) > 0:
        sys.setswitchinterval(interval)


@worker_init.connect
def _enough_pooled_connections(sender: Any = None, **_: object) -> None:
    """Stop a worker whose threads would wait for pooled connections: each thread keeps one, and the lease
    keeper borrows one more, so the pool's `max_size` (DATABASE_POOL_MAX) must exceed the concurrency.
    Raises ImproperlyConfigured; nothing to check without a pool (SQLite) or with `auto` concurrency."""
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    pool = settings.DATABASES["default"].get("OPTIONS", {}).get("pool")
    concurrency = getattr(sender, "concurrency", None)
    if not keeps_connections() or not isinstance(pool, dict) or not isinstance(concurrency, int):
        return
    if concurrency + 1 > int(pool.get("max_size", 0)):
        raise ImproperlyConfigured(
            f"a worker of concurrency {concurrency} keeps {concurrency} database connections and its lease keeper "
            f"one more: set DATABASE_POOL_MAX to at least {concurrency + 1} (it is {pool.get('max_size')})"
        )
