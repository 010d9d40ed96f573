"""config/celery.py: a worker thread keeps its database connection across tasks, hands back one it cannot trust,
and a threads-pool worker runs with a short GIL switch interval (issue 15 part 3)."""

from __future__ import annotations

import sys
import time
from types import SimpleNamespace

import pytest
from django.db import connection

from config import celery as keel_celery

EAGER = SimpleNamespace(request=SimpleNamespace(is_eager=True))
TASK = SimpleNamespace(request=SimpleNamespace(is_eager=False))


@pytest.fixture
def fixup():
    installed = keel_celery.KeelWorkerFixup(keel_celery.app)
    # What `install` does at worker_init, without connecting the process-wide signals in a test.
    keel_celery.DjangoWorkerFixup.__init__(installed, keel_celery.app)
    yield installed
    keel_celery.KeelWorkerFixup._local.__dict__.clear()


def _connected() -> object:
    connection.ensure_connection()
    assert connection.connection is not None
    return connection.connection


def test_the_app_gives_celery_our_worker_fixup():
    fixups = [f for f in keel_celery.app._fixups if type(f).__name__ == "DjangoFixup"]  # type: ignore[attr-defined]

    assert [type(f.worker_fixup) for f in fixups] == [keel_celery.KeelWorkerFixup]


@pytest.mark.django_db(transaction=True)
def test_a_clean_connection_outlives_the_task(require_postgres, fixup):
    # Given: a task ran a query on this thread's connection
    before = _connected()

    # When: the task ends and the next one starts at once
    fixup.on_task_postrun(sender=TASK)
    fixup.on_task_prerun(sender=TASK)

    # Then: the thread still holds the same connection (Celery's fix-up would have handed it back twice)
    assert connection.connection is before
    assert connection.cursor().execute("SELECT 1") is not None


@pytest.mark.django_db(transaction=True)
def test_a_connection_that_saw_an_error_is_handed_back(require_postgres, fixup):
    _connected()
    with pytest.raises(Exception, match="no_such_table"), connection.cursor() as cursor:
        cursor.execute("SELECT * FROM no_such_table")
    assert connection.errors_occurred

    fixup.on_task_postrun(sender=TASK)

    assert connection.connection is None


@pytest.mark.django_db(transaction=True)
def test_a_connection_left_out_of_autocommit_is_handed_back(require_postgres, fixup):
    _connected()
    connection.set_autocommit(False)

    fixup.on_task_postrun(sender=TASK)

    assert connection.connection is None
    assert connection.get_autocommit()  # a fresh one, in the settings' autocommit


@pytest.mark.django_db(transaction=True)
def test_an_idle_connection_is_checked_before_the_next_task_and_replaced_if_dead(require_postgres, fixup, monkeypatch):
    before = _connected()
    fixup.on_task_postrun(sender=TASK)
    monkeypatch.setattr(connection, "is_usable", lambda: False)

    # Not idle long enough: no check, the connection stays
    fixup.on_task_prerun(sender=TASK)
    assert connection.connection is before

    # Idle past IDLE_CHECK_SECONDS and no longer answering: handed back before the task runs
    fixup._local.idle_since = time.monotonic() - keel_celery.IDLE_CHECK_SECONDS - 1
    fixup.on_task_prerun(sender=TASK)
    assert connection.connection is None


@pytest.mark.django_db(transaction=True)
def test_an_idle_connection_that_answers_is_kept(require_postgres, fixup):
    before = _connected()
    fixup.on_task_postrun(sender=TASK)
    fixup._local.idle_since = time.monotonic() - keel_celery.IDLE_CHECK_SECONDS - 1

    fixup.on_task_prerun(sender=TASK)

    assert connection.connection is before


@pytest.mark.django_db(transaction=True)
def test_eager_tasks_leave_the_connection_alone(require_postgres, fixup, monkeypatch):
    before = _connected()
    connection.errors_occurred = True
    try:
        fixup.on_task_postrun(sender=EAGER)
        assert connection.connection is before
    finally:
        connection.errors_occurred = False


@pytest.fixture
def switch_interval():
    saved = sys.getswitchinterval()
    yield
    sys.setswitchinterval(saved)


@pytest.mark.parametrize(
    ("pool", "env", "expected"),
    [
        ("threads", None, 0.0005),
        ("celery.concurrency.thread:TaskPool", None, 0.0005),
        ("threads", "0.001", 0.001),
        ("threads", "0", None),  # 0: Python's default kept
        ("prefork", None, None),  # one task per process: nothing to hand over
        ("solo", None, None),
    ],
)
def test_a_threads_pool_worker_sets_a_short_switch_interval(switch_interval, monkeypatch, pool, env, expected):
    if env is None:
        monkeypatch.delenv("KEEL_WORKER_SWITCH_INTERVAL", raising=False)
    else:
        monkeypatch.setenv("KEEL_WORKER_SWITCH_INTERVAL", env)
    sys.setswitchinterval(0.005)

    keel_celery._short_switch_interval(sender=SimpleNamespace(pool_cls=pool))

    assert sys.getswitchinterval() == pytest.approx(expected if expected is not None else 0.005)


def test_a_negative_switch_interval_is_refused(monkeypatch):
    monkeypatch.setenv("KEEL_WORKER_SWITCH_INTERVAL", "-1")

    with pytest.raises(ValueError, match="KEEL_WORKER_SWITCH_INTERVAL"):
        keel_celery.switch_interval()


@pytest.mark.parametrize(("concurrency", "refused"), [(4, False), (9, False), (10, True), ("auto", False)])
def test_a_worker_whose_threads_would_wait_for_pooled_connections_does_not_start(monkeypatch, concurrency, refused):
    from django.conf import settings
    from django.core.exceptions import ImproperlyConfigured

    monkeypatch.delenv("KEEL_WORKER_KEEP_DB_CONNECTIONS", raising=False)
    monkeypatch.setitem(settings.DATABASES["default"], "OPTIONS", {"pool": {"min_size": 1, "max_size": 10}})
    worker = SimpleNamespace(concurrency=concurrency)

    if refused:
        with pytest.raises(ImproperlyConfigured, match="DATABASE_POOL_MAX to at least 11"):
            keel_celery._enough_pooled_connections(sender=worker)
    else:
        keel_celery._enough_pooled_connections(sender=worker)


def test_without_a_pool_or_with_connections_handed_back_any_concurrency_starts(monkeypatch):
    from django.conf import settings

    worker = SimpleNamespace(concurrency=64)
    monkeypatch.delenv("KEEL_WORKER_KEEP_DB_CONNECTIONS", raising=False)
    monkeypatch.setitem(settings.DATABASES["default"], "OPTIONS", {})
    keel_celery._enough_pooled_connections(sender=worker)  # SQLite / no pool: nothing to check

    monkeypatch.setitem(settings.DATABASES["default"], "OPTIONS", {"pool": {"max_size": 10}})
    monkeypatch.setenv("KEEL_WORKER_KEEP_DB_CONNECTIONS", "false")
    keel_celery._enough_pooled_connections(sender=worker)


def test_a_worker_notes_the_queues_it_consumes_for_the_outbox_to_carry_on(monkeypatch):
    from apps.outbox import delivery

    monkeypatch.setattr(delivery, "served_queues", frozenset())
    queues = SimpleNamespace(consume_from={"scoring": object(), "decisions": object()})
    from apps.outbox.tasks import _note_the_served_queues

    _note_the_served_queues(sender=SimpleNamespace(app=SimpleNamespace(amqp=SimpleNamespace(queues=queues))))

    assert delivery.served_queues == {"scoring", "decisions"}


@pytest.mark.django_db(transaction=True)
def test_a_loans_worker_scores_and_decides_an_application_with_no_relay_running(require_postgres, settings):
    """ADR 0070 in a real worker process (`celery worker --queues scoring,decisions`, the Procfile's loans worker):
    the test hands it the `submitted` row through Redis and runs **no relay**; the `scored` row is decided all
    the same — the worker claimed and delivered it itself — while `decided` (queue `webhooks`, another worker's)
    stays pending for the relay."""
    import os
    import subprocess

    from kombu import Connection

    from apps.loan_applications.models import LoanApplication
    from apps.loan_applications.tests.factories import create_application
    from apps.outbox.claims import claim
    from apps.outbox.models import OutboxMessage, OutboxStatus
    from apps.partners.tests.factories import PartnerFactory

    redis_url = os.environ.get("REDIS_URL", "")
    assert redis_url.startswith("redis://"), "needs Redis (make test sets REDIS_URL)"
    database = settings.DATABASES["default"]
    database_url = (
        f"postgres://{database['USER']}@{database['HOST'] or '127.0.0.1'}:{database['PORT'] or 5432}/{database['NAME']}"
    )
    queue_prefix = f"carry-{os.getpid()}-"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.test",
        "DATABASE_URL": database_url,
        "TEST_CELERY_BROKER_URL": redis_url,
    }
    application = create_application(partner=PartnerFactory(name="acme"))
    (submitted,) = claim(batch_size=10)  # what the relay would do for the first step, once
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "config", "worker", "--pool", "threads", "--concurrency", "2",
         "--queues", "scoring,decisions", "--without-gossip", "--without-mingle", "--loglevel", "WARNING",
         "--hostname", f"{queue_prefix}loans@%h"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        with Connection(redis_url) as broker:
            keel_celery.app.send_task(
                "outbox.deliver", args=[submitted.to_envelope()], queue="scoring", connection=broker
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = LoanApplication.objects.filter(pk=application.pk).values_list("status", flat=True).get()
            if status != "PENDING":
                break
            assert worker.poll() is None, worker.stderr.read() if worker.stderr else ""
            time.sleep(0.2)
    finally:
        worker.terminate()
        worker.wait(30)

    assert LoanApplication.objects.get(pk=application.pk).status != "PENDING"
    rows = dict(OutboxMessage.objects.values_list("topic", "status"))
    assert rows == {
        "loan_application.submitted": OutboxStatus.DONE,
        "loan_application.scored": OutboxStatus.DONE,
        "loan_application.decided": OutboxStatus.PENDING,
    }
