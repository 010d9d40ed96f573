"""The reconciliation API: scopes, tenancy (404 across employers), 409 on overlap, cancel, discrepancies and
their resolution (SPEC §2, §8; issue 12)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.employers.tests.factories import EmployerFactory
from apps.endorsements.tests.factories import PolicyFactory
from apps.partners.models import Scope
from apps.reconciliation.models import Discrepancy, ReconciliationRun, RunStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(make_key):
    policy = PolicyFactory()
    other = PolicyFactory(insurer=policy.insurer)
    own = make_key(partner=policy.employer.partner, employers=[policy.employer])
    foreign = make_key(partner=other.employer.partner, employers=[other.employer])
    return policy, own, foreign


def _discrepancy(run: ReconciliationRun, policy, *, kind: str, key: str) -> Discrepancy:
    return Discrepancy.objects.create(
        run=run,
        employer=policy.employer,
        policy=policy,
        employee_code="E1",
        kind=kind,
        severity="high",
        keel_value=1,
        insurer_value=2,
        key=key,
    )


def test_post_starts_a_run_and_a_second_overlapping_post_is_409_naming_it(setup) -> None:
    policy, own, _ = setup

    first = own.post("/api/v1/reconciliations", {"insurer": policy.insurer.code, "employer": policy.employer_id})
    second = own.post("/api/v1/reconciliations", {"insurer": policy.insurer.code})

    assert first.status_code == 202, first.content
    body = first.json()
    assert (body["status"], body["insurer"], body["employers"]) == ("RUNNING", "sandbox-rest", [policy.employer_id])
    assert second.status_code == 409
    assert second["Content-Type"] == "application/problem+json"
    assert second.json()["running_id"] == body["id"]
    assert ReconciliationRun.objects.count() == 1


def test_overlap_with_a_run_the_key_cannot_see_does_not_name_it(setup, make_key) -> None:
    policy, own, _ = setup
    platform = make_key(partner=policy.employer.partner, all_employers=True)
    PolicyFactory(insurer=policy.insurer, employer=EmployerFactory(partner=policy.employer.partner))
    started = platform.post("/api/v1/reconciliations", {"insurer": policy.insurer.code})
    assert started.status_code == 202, started.content

    refused = own.post("/api/v1/reconciliations", {"insurer": policy.insurer.code})

    assert refused.status_code == 409
    assert "running_id" not in refused.json()


def test_foreign_employer_is_404_and_unknown_insurer_422(setup) -> None:
    policy, _, foreign = setup

    assert (
        foreign.post(
            "/api/v1/reconciliations", {"insurer": policy.insurer.code, "employer": policy.employer_id}
        ).status_code
        == 404
    )
    assert foreign.post("/api/v1/reconciliations", {"insurer": "nope"}).status_code == 422
    assert ReconciliationRun.objects.count() == 0


def test_key_of_another_employer_gets_404_on_the_run_and_its_discrepancies(setup) -> None:
    policy, own, foreign = setup
    run_id = own.post("/api/v1/reconciliations", {"insurer": policy.insurer.code}).json()["id"]
    discrepancy = _discrepancy(ReconciliationRun.objects.get(pk=run_id), policy, kind="missing_at_insurer", key="k")

    assert foreign.get(f"/api/v1/reconciliations/{run_id}").status_code == 404
    assert foreign.get(f"/api/v1/reconciliations/{run_id}/discrepancies").status_code == 404
    assert foreign.delete(f"/api/v1/reconciliations/{run_id}").status_code == 404
    assert foreign.post(f"/api/v1/discrepancies/{discrepancy.pk}/resolve", {"action": "ignore"}).status_code == 404
    discrepancy.refresh_from_db()
    assert discrepancy.status == "open"
    assert ReconciliationRun.objects.get(pk=run_id).cancel_requested_at is None


def test_get_shows_progress_and_delete_requests_cancel(setup) -> None:
    policy, own, _ = setup
    run_id = own.post("/api/v1/reconciliations", {"insurer": policy.insurer.code}).json()["id"]

    shown = own.get(f"/api/v1/reconciliations/{run_id}")
    cancelled = own.delete(f"/api/v1/reconciliations/{run_id}")

    assert shown.status_code == 200
    assert shown.json()["progress"] == {
        "policies_total": 0,
        "policies_done": 0,
        "pages_pulled": 0,
        "rows_pulled": 0,
        "rows_matched": 0,
        "rows_expected": 0,
        "percent": 0,
    }
    assert cancelled.status_code == 202
    assert cancelled.json()["cancel_requested_at"] is not None
    assert ReconciliationRun.objects.get(pk=run_id).status == RunStatus.RUNNING


def test_read_scope_cannot_start_a_run(setup, make_key) -> None:
    policy, _, _ = setup
    reader = make_key(partner=policy.employer.partner, employers=[policy.employer], scopes=[Scope.RECONCILIATION_READ])

    assert reader.post("/api/v1/reconciliations", {"insurer": policy.insurer.code}).status_code == 403
    assert ReconciliationRun.objects.count() == 0


def test_discrepancies_filter_and_resolve_once(setup) -> None:
    policy, own, _ = setup
    run_id = own.post("/api/v1/reconciliations", {"insurer": policy.insurer.code}).json()["id"]
    run = ReconciliationRun.objects.get(pk=run_id)
    money = _discrepancy(run, policy, kind="amount_mismatch", key="charge:1")
    member = _discrepancy(run, policy, kind="missing_at_insurer", key="member:E1")

    listed = own.get(f"/api/v1/reconciliations/{run_id}/discrepancies?kind=amount_mismatch")
    first = own.post(f"/api/v1/discrepancies/{money.pk}/resolve", {"action": "flag_for_finance", "note": "check"})
    again = own.post(f"/api/v1/discrepancies/{money.pk}/resolve", {"action": "flag_for_finance", "note": "other"})
    other = own.post(f"/api/v1/discrepancies/{money.pk}/resolve", {"action": "ignore", "note": "other"})
    refused = own.post(f"/api/v1/discrepancies/{member.pk}/resolve", {"action": "flag_for_finance"})

    assert [d["id"] for d in listed.json()["results"]] == [money.pk]
    assert first.status_code == again.status_code == 200
    assert first.json() == again.json()
    assert (other.status_code, other.json()["resolution_action"]) == (409, "flag_for_finance")
    assert (first.json()["status"], first.json()["resolution_action"]) == ("resolved", "flag_for_finance")
    assert refused.status_code == 422
    member.refresh_from_db()
    assert member.status == "open"
    assert AuditEvent.objects.filter(action="reconciliation.discrepancy_resolved").count() == 1


@pytest.mark.django_db(transaction=True)
def test_concurrent_posts_give_one_202_and_one_409(make_key) -> None:
    policy = PolicyFactory()
    client = make_key(partner=policy.employer.partner, employers=[policy.employer])
    clients = [client, make_key(partner=policy.employer.partner, employers=[policy.employer])]
    barrier = threading.Barrier(2)
    codes: list[int] = []

    def post(c) -> None:
        try:
            barrier.wait()
            codes.append(c.post("/api/v1/reconciliations", {"insurer": policy.insurer.code}).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert sorted(codes) == [202, 409]
    assert ReconciliationRun.objects.count() == 1


def test_post_honours_idempotency_key(setup) -> None:
    """SPEC §2: every creating POST honours Idempotency-Key — a retry answers the same run (newcomer trial)."""
    policy, own, _ = setup
    body = {"insurer": policy.insurer.code, "employer": policy.employer_id}

    first = own.post("/api/v1/reconciliations", body, HTTP_IDEMPOTENCY_KEY="run-once")
    again = own.post("/api/v1/reconciliations", body, HTTP_IDEMPOTENCY_KEY="run-once")
    other_body = own.post("/api/v1/reconciliations", {"insurer": policy.insurer.code}, HTTP_IDEMPOTENCY_KEY="run-once")

    assert first.status_code == again.status_code == 202
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == first.json()
    assert other_body.status_code == 422
    assert ReconciliationRun.objects.count() == 1


def test_post_with_the_broker_down_is_202_and_the_outbox_queues_the_run_once_it_is_back(
    setup, django_capture_on_commit_callbacks
) -> None:
    """ADR 0058: the run is queued through the outbox row written with it, so a broker outage at POST time costs
    neither a 500 nor a RUNNING run nobody executes; once the relay delivers, the consumer queues it (once)."""
    from unittest import mock

    from kombu.exceptions import OperationalError

    from apps.outbox.models import OutboxMessage
    from apps.outbox.testing import drain
    from apps.reconciliation.contracts import TOPIC_RUN_REQUESTED

    policy, own, _ = setup
    down = OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")
    with mock.patch("apps.reconciliation.tasks.reconciliation_run.apply_async", side_effect=down) as refused:
        with django_capture_on_commit_callbacks(execute=True):
            response = own.post("/api/v1/reconciliations", {"insurer": policy.insurer.code})

    assert response.status_code == 202, response.content
    run = ReconciliationRun.objects.get()
    assert (response.json()["id"], run.status) == (run.pk, RunStatus.RUNNING)
    refused.assert_not_called()
    (row,) = OutboxMessage.objects.filter(topic=TOPIC_RUN_REQUESTED)
    assert (row.payload, row.key) == ({"run_id": run.pk, "attempt": 0}, f"reconciliation-run-{run.pk}")

    with mock.patch("apps.reconciliation.tasks.reconciliation_run.apply_async") as queued:
        drain()
        drain()  # a second pass delivers nothing again
    queued.assert_called_once_with(args=(run.pk, 0), queue="reconciliation")


def test_delete_of_an_ended_run_is_409_with_the_http_status_in_the_body_and_changes_nothing(setup) -> None:
    policy, own, _ = setup
    run_id = own.post("/api/v1/reconciliations", {"insurer": policy.insurer.code}).json()["id"]
    ReconciliationRun.objects.filter(pk=run_id).update(status=RunStatus.COMPLETED, finished_at=timezone.now())

    refused = own.delete(f"/api/v1/reconciliations/{run_id}")

    body = refused.json()
    assert (refused.status_code, body["status"], body["run_status"]) == (409, 409, "COMPLETED")
    assert body["type"].endswith("/reconciliation-ended")
    run = ReconciliationRun.objects.get(pk=run_id)
    assert (run.status, run.cancel_requested_at) == (RunStatus.COMPLETED, None)
