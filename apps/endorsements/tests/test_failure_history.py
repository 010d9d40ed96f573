"""What an endorsement's record says about failures (issue 11, items 3 and 4): the history tells the truth about
sending (handed to the gateway; each retried transient failure noted once per round), and an endorsement that
leaves FAILED for good keeps no old rejection class or reason."""

from __future__ import annotations

import io
from datetime import date, timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.common.actors import Actor
from apps.endorsements import services
from apps.endorsements.models import Endorsement, EndorsementHistory, EndorsementStatus
from apps.endorsements.tests.factories import PolicyFactory, addition
from apps.endorsements.tests.pipeline import run_pipeline
from apps.insurers.models import Insurer
from apps.insurers.sandbox.models import SandboxConfig
from apps.insurers.sandbox.setup import sandbox_register
from apps.ledger import services as ledger
from apps.outbox.testing import drain

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

S = EndorsementStatus
SYSTEM = Actor.system("tests")
TODAY = date(2026, 6, 1)


@pytest.fixture
def world(live_server, make_key, time_machine, require_postgres):
    time_machine.move_to(timezone.make_aware(timezone.datetime(2026, 6, 1, 10, 0)), tick=True)
    [insurer] = sandbox_register(base_url=live_server.url)
    policy = PolicyFactory(insurer=insurer)
    client = make_key(partner=policy.employer.partner, all_employers=True)
    ledger.topup_post(employer_id=policy.employer_id, amount=1_000_000_00, reference="topup-history", actor=SYSTEM)
    return policy, client, live_server


def history(endorsement_id: int) -> list[tuple[str, str, str]]:
    return list(
        EndorsementHistory.objects.filter(endorsement_id=endorsement_id)
        .order_by("id")
        .values_list("from_status", "to_status", "detail")
    )


def test_configuration_failure_retried_after_the_fix_ends_active_with_no_old_rejection(world) -> None:
    policy, client, live_server = world
    broken = Insurer.objects.create(code="broken-1", name="Broken", protocol="rest", endpoint="ftp://insurer.example")
    broken_policy = PolicyFactory(employer=policy.employer, insurer=broken)
    body = client.post("/api/v1/endorsements", addition(broken_policy, "C-1", effective=TODAY)).json()
    run_pipeline()
    failed = Endorsement.objects.get(pk=body["id"])
    assert (failed.status, failed.rejection_class) == (S.FAILED, "configuration")
    reason = failed.rejection_reason
    assert "broken-1" in reason

    Insurer.objects.filter(pk=broken.pk).update(endpoint=f"{live_server.url}/sandbox/broken-1")
    call_command("endorsements_retry_failed", stdout=io.StringIO())
    run_pipeline()

    shown = client.get(f"/api/v1/endorsements/{body['id']}").json()
    e = Endorsement.objects.get(pk=body["id"])
    assert (shown["status"], shown["rejection_class"], shown["rejection_reason"]) == ("ACTIVE", "", "")
    assert (e.status, e.rejection_class, e.rejection_reason, e.last_error) == (S.ACTIVE, "", "", "")
    hold = f"hold of {e.premium_amount} paise placed"
    assert history(e.pk) == [
        ("", S.RECEIVED, "received"),
        (S.RECEIVED, S.VALIDATED, "validated"),
        (S.VALIDATED, S.FUNDS_LOCKED, hold),
        (S.FUNDS_LOCKED, S.SENT, "handed to broken-1's gateway"),
        (S.SENT, S.FAILED, f"not sent, Keel cannot send to this insurer: {reason}"),
        (S.FAILED, S.RECEIVED, "retried by system:manage.py endorsements_retry_failed"),
        (S.RECEIVED, S.VALIDATED, "validated"),
        (S.VALIDATED, S.FUNDS_LOCKED, hold),
        (S.FUNDS_LOCKED, S.SENT, "handed to broken-1's gateway"),
        (S.SENT, S.CONFIRMED, f"confirmed by insurer ({e.insurer_reference})"),
        (S.CONFIRMED, S.ACTIVE, "cover in force"),
    ]


def test_each_retried_transient_failure_is_noted_once_per_round(world, settings, time_machine) -> None:
    policy, client, _ = world
    settings.ENDORSEMENT_SEND_MAX_ATTEMPTS = 3
    settings.OUTBOX = {**settings.OUTBOX, "BACKOFF_BASE_SECONDS": 0.0, "BACKOFF_CAP_SECONDS": 0.0}
    SandboxConfig.objects.filter(code="sandbox-rest").update(failure_rate=1.0)
    ids = [
        client.post("/api/v1/endorsements", addition(policy, f"T-{n}", effective=TODAY)).json()["id"] for n in range(2)
    ]

    run_pipeline()
    for _ in range(6):  # the sandbox answers 503 with Retry-After: 1; let each retry come due
        time_machine.shift(timedelta(seconds=2))
        drain()

    failure = "insurer sandbox-rest answered HTTP 503"
    for pk in ids:
        sending = [h for h in history(pk) if S.SENT in (h[0], h[1])]
        assert sending == [
            (S.FUNDS_LOCKED, S.SENT, "handed to sandbox-rest's gateway"),
            (S.SENT, S.SENT, f"send attempt 1 failed: {failure}; retrying"),
            (S.SENT, S.SENT, f"send attempt 2 failed: {failure}; retrying"),
            (S.SENT, S.FAILED, f"gave up sending after retries: {failure} (3 failed attempts)"),
        ]
    assert Endorsement.objects.get(pk=ids[0]).rejection_reason == f"{failure} (3 failed attempts)"


def test_a_redelivered_retry_round_notes_nothing_twice(world) -> None:
    policy, client, _ = world
    pk = client.post("/api/v1/endorsements", addition(policy, "R-1", effective=TODAY)).json()["id"]
    drain()
    Endorsement.objects.filter(pk=pk).update(status=S.SENT)

    first = services.endorsements_note_send_retry(ids=[pk], attempt=1, reason="timed out", actor=SYSTEM)
    again = services.endorsements_note_send_retry(ids=[pk], attempt=1, reason="timed out", actor=SYSTEM)
    second = services.endorsements_note_send_retry(ids=[pk], attempt=2, reason="HTTP 503", actor=SYSTEM)

    assert (first, again, second) == (1, 0, 1)
    assert [h[2] for h in history(pk) if h[1] == S.SENT] == [
        "send attempt 1 failed: timed out; retrying",
        "send attempt 2 failed: HTTP 503; retrying",
    ]


def test_a_batch_file_that_cannot_be_written_is_noted_per_round(world, settings, time_machine, tmp_path) -> None:
    policy, client, _ = world
    settings.ENDORSEMENT_SEND_MAX_ATTEMPTS = 2
    settings.OUTBOX = {**settings.OUTBOX, "BACKOFF_BASE_SECONDS": 0.0, "BACKOFF_CAP_SECONDS": 0.0}
    blocker = tmp_path / "outbound"
    blocker.write_text("a file where the outbound folder should be")
    files = Insurer.objects.create(
        code="files-1", name="Files", protocol="file", outbound_folder=str(blocker), inbound_folder=str(tmp_path)
    )
    pk = client.post(
        "/api/v1/endorsements", addition(PolicyFactory(employer=policy.employer, insurer=files), "W-1", effective=TODAY)
    ).json()["id"]

    run_pipeline()
    for _ in range(4):
        time_machine.shift(timedelta(seconds=2))
        drain()

    failure = f"insurer files-1: could not write the batch file: cannot create {blocker}: File exists"
    assert [h for h in history(pk) if S.SENT in (h[0], h[1])] == [
        (S.FUNDS_LOCKED, S.SENT, "handed to files-1's gateway"),
        (S.SENT, S.SENT, f"send attempt 1 failed: {failure}; retrying"),
        (S.SENT, S.FAILED, f"gave up sending after retries: {failure} (2 failed attempts)"),
    ]
