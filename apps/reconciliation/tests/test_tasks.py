"""Beat entry points: the nightly run per active insurer, the 400-day roster history."""

from __future__ import annotations

from datetime import timedelta
from unittest import mock

import pytest
from django.utils import timezone

from apps.endorsements.tests.factories import PolicyFactory
from apps.outbox.testing import drain
from apps.reconciliation.models import InsurerRosterChange, InsurerRosterEntry, ReconciliationRun
from apps.reconciliation.tasks import reconciliation_history_purge, reconciliation_nightly

pytestmark = pytest.mark.django_db


def test_nightly_starts_one_operator_run_per_active_insurer_and_skips_a_running_one(
    django_capture_on_commit_callbacks,
) -> None:
    policy = PolicyFactory()
    PolicyFactory(insurer=policy.insurer)

    with mock.patch("apps.reconciliation.tasks.reconciliation_run.apply_async") as queued:
        with django_capture_on_commit_callbacks(execute=True):
            first = reconciliation_nightly()
        second = reconciliation_nightly()
        drain()  # the run is queued through its outbox row (ADR 0058)

    run = ReconciliationRun.objects.get()
    assert first == {"sandbox-rest": run.pk}
    assert second == {"sandbox-rest": "skipped"}
    assert (run.employer_id, run.partner_id, len(run.employer_ids)) == (None, None, 2)
    queued.assert_called_once_with(args=(run.pk, 0), queue="reconciliation")  # attempt 0: its first


def test_roster_history_is_kept_400_days(start_run) -> None:
    policy = PolicyFactory()
    now = timezone.now()
    entry = InsurerRosterEntry.objects.create(
        insurer=policy.insurer,
        policy=policy,
        employee_code="E1",
        first_name="A",
        last_name="B",
        sum_insured=1,
        first_seen_at=now,
        updated_at=now,
    )
    old = InsurerRosterChange.objects.create(entry=entry, changed_at=now - timedelta(days=401))
    kept = InsurerRosterChange.objects.create(entry=entry, changed_at=now - timedelta(days=399))

    assert reconciliation_history_purge() == 1
    assert list(InsurerRosterChange.objects.values_list("pk", flat=True)) == [kept.pk]
    assert old.pk != kept.pk
