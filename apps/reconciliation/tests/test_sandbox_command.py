"""`manage.py sandbox_insurer` makes the sandbox's roster drift and its roster API throttle without a Python
shell (issue 12)."""

from __future__ import annotations

from datetime import date

import pytest
from django.core.management import CommandError, call_command

from apps.insurers.sandbox.models import SandboxCharge, SandboxRosterControl, SandboxRosterMember
from apps.insurers.sandbox.roster import sandbox_roster_load
from apps.reconciliation.tests.conftest import SANDBOX, member

pytestmark = pytest.mark.django_db


@pytest.fixture
def roster():
    sandbox_roster_load(code=SANDBOX, policy_number="P-1", members=[member("E1"), member("E2"), member("E3")])
    SandboxCharge.objects.create(code=SANDBOX, policy_number="P-1", endorsement_id=41, amount=100_00)
    SandboxCharge.objects.create(code=SANDBOX, policy_number="P-1", endorsement_id=42, amount=200_00)


def _roster() -> dict[str, tuple]:
    return {
        m.employee_code: (m.first_name, m.date_of_birth, m.sum_insured)
        for m in SandboxRosterMember.objects.filter(code=SANDBOX, policy_number="P-1")
    }


def test_drift_and_throttle_options_change_the_sandbox(roster, capsys) -> None:
    call_command(
        "sandbox_insurer",
        "--policy=P-1",
        "--drift=drop_member:E1",
        "--drift=change:E2:sum_insured=300000.50",
        "--drift=change:E3:date_of_birth=1980-01-02",
        "--drift=add_member:X9:Ravi:Iyer:1985-03-04:250000.00",
        "--drift=charge_amount:41:101.00",
        "--drift=drop_charge:42",
        "--throttle-every=3",
        "--retry-after=2",
    )

    assert _roster() == {
        "E2": ("Asha", date(1990, 5, 17), 300_000_50),
        "E3": ("Asha", date(1980, 1, 2), 500_000_00),
        "X9": ("Ravi", date(1985, 3, 4), 250_000_00),
    }
    assert list(SandboxCharge.objects.values_list("endorsement_id", "amount")) == [(41, 101_00)]
    control = SandboxRosterControl.objects.get(code=SANDBOX)
    assert (control.throttle_every, control.retry_after_seconds, control.failures_remaining) == (3, 2, 0)
    assert "sandbox-rest: dropped member E1" in capsys.readouterr().out


@pytest.mark.parametrize(
    "spec", ["drop_member:NOPE", "change:E1:salary=3", "change:E1:sum_insured=abc", "explode:E1", "drop_member"]
)
def test_an_unreadable_or_empty_drift_is_a_command_error(roster, spec) -> None:
    before = _roster()

    with pytest.raises(CommandError):
        call_command("sandbox_insurer", "--policy=P-1", f"--drift={spec}")

    assert _roster() == before
