"""The dispatch consumer's retry budget (ADR 0025): a call our own breaker or rate limit held back is deferred
without spending an attempt; an insurer failure spends one; the budget ends by attempts or by time."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from django.utils import timezone

from apps.common.actors import Actor
from apps.endorsements import handlers, services
from apps.endorsements.models import Endorsement, EndorsementStatus
from apps.endorsements.tests.factories import PolicyFactory, addition
from apps.endorsements.tests.test_services import submit
from apps.insurers.contracts import InsurerCallDeferred, SubmissionResult, TransientInsurerError
from apps.ledger import services as ledger
from apps.outbox.claims import claim
from apps.outbox.models import OutboxMessage, OutboxStatus
from apps.outbox.tasks import deliver_envelope
from apps.outbox.testing import drain

pytestmark = pytest.mark.django_db

S = EndorsementStatus
SYSTEM = Actor.system("tests")


@pytest.fixture
def dispatch_row(time_machine):
    """One endorsement SENT and its `endorsements.dispatch` row pending (the insurer not yet called)."""
    time_machine.move_to(timezone.make_aware(timezone.datetime(2026, 6, 1, 10, 0)), tick=True)
    policy = PolicyFactory()
    ledger.topup_post(employer_id=policy.employer_id, amount=10_000_00, reference="fund", actor=SYSTEM)
    e = submit(policy, addition(policy, "E-1", effective=date(2026, 6, 1)))
    drain()
    assert services.scheduler_tick(actor=SYSTEM, force=True) == 1
    row = OutboxMessage.objects.get(topic="endorsements.dispatch")
    assert row.key is None  # one insurer is not one queue (issue 10)
    return e, row


def deliver_once(row_id: int) -> None:
    OutboxMessage.objects.filter(pk=row_id).update(available_at=timezone.now())
    [message] = [m for m in claim(batch_size=100) if m.id == row_id]
    deliver_envelope(message.to_envelope())


def test_calls_held_back_by_our_breaker_are_deferred_without_spending_the_budget(dispatch_row, monkeypatch, settings):
    settings.ENDORSEMENT_SEND_MAX_ATTEMPTS = 2
    e, row = dispatch_row

    def circuit_open(**kwargs):
        raise InsurerCallDeferred("circuit open for insurer x", retry_after=4.0)

    monkeypatch.setattr(handlers, "insurer_submit", circuit_open)
    for _ in range(5):  # far more than the budget of attempts
        deliver_once(row.pk)

    row.refresh_from_db()
    assert (row.status, row.attempts) == (OutboxStatus.PENDING, 0)
    assert row.available_at - timezone.now() > timedelta(seconds=3)
    assert Endorsement.objects.get(pk=e.pk).status == S.SENT

    monkeypatch.setattr(handlers, "insurer_submit", lambda **kw: [SubmissionResult(e.pk, "confirmed", "REF-1")])
    deliver_once(row.pk)
    assert Endorsement.objects.get(pk=e.pk).status == S.ACTIVE


def test_insurer_failures_spend_attempts_and_the_batch_fails_when_they_are_spent(dispatch_row, monkeypatch, settings):
    settings.ENDORSEMENT_SEND_MAX_ATTEMPTS = 3
    settings.OUTBOX = {**settings.OUTBOX, "MAX_ATTEMPTS": 2}  # the dispatch keeps its own, larger budget
    e, row = dispatch_row

    def insurer_503(**kwargs):
        raise TransientInsurerError("insurer answered 503", retry_after=1.0)

    monkeypatch.setattr(handlers, "insurer_submit", insurer_503)
    statuses = []
    for _ in range(3):
        deliver_once(row.pk)
        row.refresh_from_db()
        statuses.append((row.status, row.attempts, Endorsement.objects.get(pk=e.pk).status))

    assert statuses == [
        (OutboxStatus.PENDING, 1, S.SENT),
        (OutboxStatus.PENDING, 2, S.SENT),
        (OutboxStatus.DONE, 2, S.FAILED),
    ]
    assert "3 failed attempts" in Endorsement.objects.get(pk=e.pk).last_error


def test_the_budget_also_ends_by_time_since_the_batch_was_sent(dispatch_row, monkeypatch, settings, time_machine):
    settings.ENDORSEMENT_SEND_MAX_ATTEMPTS = 100
    settings.ENDORSEMENT_SEND_MAX_HOURS = 2
    e, row = dispatch_row

    def insurer_503(**kwargs):
        raise TransientInsurerError("insurer answered 503")

    monkeypatch.setattr(handlers, "insurer_submit", insurer_503)
    deliver_once(row.pk)
    assert Endorsement.objects.get(pk=e.pk).status == S.SENT

    time_machine.shift(timedelta(hours=2, seconds=1))
    deliver_once(row.pk)

    failed = Endorsement.objects.get(pk=e.pk)
    assert failed.status == S.FAILED
    assert "retried for 2.0 h" in failed.last_error
