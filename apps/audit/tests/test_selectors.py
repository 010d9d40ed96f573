from __future__ import annotations

import pytest

from apps.audit.models import JobRunEvent
from apps.audit.selectors import audit_events, insurer_exchanges, last_job_runs, object_history
from apps.audit.services import insurer_exchange_record, job_run, job_run_finish, job_run_start

pytestmark = pytest.mark.django_db


def test_last_job_runs_shows_each_jobs_latest_run_finished_or_running():
    with job_run("reconcile") as run:
        run.counts["matched"] = 1
    running_reconcile = job_run_start(job="reconcile")
    with pytest.raises(RuntimeError), job_run("import"):
        raise RuntimeError("bad file")
    finished_sweep = job_run_start(job="sweep")
    job_run_finish(finished_sweep, status="succeeded", counts={"swept": 4})

    rows = [(e.job, e.phase, e.status, e.counts, e.run_id) for e in last_job_runs()]

    assert rows == [
        ("sweep", "end", "succeeded", {"swept": 4}, finished_sweep.run_id),
        ("import", "end", "failed", {}, rows[1][4]),
        ("reconcile", "start", "running", None, running_reconcile.run_id),
    ]
    assert [e.job for e in last_job_runs(limit=1)] == ["sweep"]
    assert JobRunEvent.objects.count() == 7


def test_audit_events_filters_and_object_history(record):
    a = record(object_type="employer", object_id=1, employer_id=1, action="employer.created", after={"n": 1})
    b = record(object_type="employer", object_id=1, employer_id=1, action="employer.updated", after={"n": 2})
    record(object_type="employer", object_id=2, employer_id=2, action="employer.created", after={"n": 1})

    assert list(audit_events(employer_id=1)) == [b, a]
    assert list(audit_events(employer_id=1, action="employer.created")) == [a]
    assert list(object_history(object_type="employer", object_id=1)) == [a, b]
    assert audit_events(request_id="req-1").count() == 3


def test_insurer_exchanges_failed_only():
    ok = insurer_exchange_record(insurer_code="x", operation="submit", response_status=200)
    bad = insurer_exchange_record(insurer_code="x", operation="submit", response_status=503)
    err = insurer_exchange_record(insurer_code="x", operation="submit", error="timeout")

    assert list(insurer_exchanges(insurer_code="x")) == [err, bad, ok]
    assert list(insurer_exchanges(failed_only=True)) == [err, bad]
