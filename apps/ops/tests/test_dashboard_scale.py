"""/ops/ panels' definitions at the edges: the funnel counts the last 24 hours, the attention counts all time."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.utils import timezone

from apps.endorsements.tests.factories import PolicyFactory
from apps.ops.selectors import dashboard
from apps.ops.tests.conftest import make_endorsement

pytestmark = pytest.mark.django_db


def test_funnel_is_the_last_24_hours_and_attention_is_all_time(time_machine):
    # Mid-hour in Asia/Kolkata, so where "23 h 59 min ago" falls is fixed (it lands in the chart's first hour when
    # the clock reads hh:59 IST — the test failed one minute in every hour when it read the wall clock).
    time_machine.move_to(datetime(2026, 11, 20, 10, 17, 5, tzinfo=ZoneInfo("Asia/Kolkata")))
    policy = PolicyFactory()
    now = timezone.now()
    make_endorsement(policy, status="FAILED", received=now - timedelta(days=3))
    make_endorsement(policy, status="FAILED", received=now - timedelta(hours=23, minutes=59))
    make_endorsement(policy, status="ACTIVE", received=now - timedelta(days=2))
    make_endorsement(policy, status="ACTIVE", received=now - timedelta(minutes=1))

    panels = dashboard(now)

    funnel = panels["funnel"].data
    assert {row["status"]: row["count"] for row in funnel["path"]}["ACTIVE"] == 1
    assert {row["status"]: row["count"] for row in funnel["side"]}["FAILED"] == 1
    assert funnel["total"] == 2
    assert {row["status"]: row["count"] for row in funnel["attention"]} == {
        "FAILED": 2,
        "ON_HOLD_FUNDS": 0,
        "ON_HOLD_REVIEW": 0,
    }
    # The chart is 24 whole IST hours ending with the current one (from 11:00 yesterday): 23 h 59 min ago (10:18
    # yesterday) falls before its first hour.
    assert panels["chart"].data["total"] == 1
    assert all(p.error is None for name, p in panels.items() if name != "queues"), {
        name: p.error for name, p in panels.items()
    }
