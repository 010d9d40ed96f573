from __future__ import annotations

from collections.abc import Callable
from datetime import date

import pytest
from django.utils import timezone

from apps.common.actors import Actor
from apps.employers.models import Coverage, Employee, Policy
from apps.endorsements.models import Endorsement, EndorsementStatus
from apps.endorsements.tests.factories import PolicyFactory, addition
from apps.endorsements.tests.pipeline import run_pipeline
from apps.insurers.models import Insurer
from apps.insurers.sandbox.roster import sandbox_roster_load
from apps.insurers.sandbox.setup import sandbox_register
from apps.ledger import services as ledger
from apps.reconciliation.models import ReconciliationRun
from apps.reconciliation.selectors import scope_employer_ids
from apps.reconciliation.services import reconciliation_start

SANDBOX = "sandbox-rest"
# Where a factory-made sandbox-rest insurer points: nothing listens there. Tests that pull register the sandbox
# on a live server (`sandbox_register`), which replaces it.
UNREACHABLE_ENDPOINT = "http://127.0.0.1:9/sandbox/sandbox-rest"


@pytest.fixture(autouse=True)
def sandbox_insurer_with_endpoint(request):
    """The `sandbox-rest` insurer `PolicyFactory` reuses, with an endpoint: a POST refuses an insurer whose
    roster cannot be pulled (422 naming `insurer`)."""
    if "django_db" not in {m.name for m in request.node.iter_markers()}:
        return
    from apps.employers.tests.factories import InsurerFactory

    InsurerFactory(code=SANDBOX, endpoint=UNREACHABLE_ENDPOINT)


class FakeClock:
    """Records every wait the puller asks for instead of sleeping."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sandbox(live_server):
    """The REST sandbox insurer, registered at this test's live server."""
    from apps.insurers.sandbox.setup import sandbox_register

    (insurer,) = sandbox_register(base_url=live_server.url)
    return insurer


class WorkerKilled(BaseException):
    """Stands for SIGKILL: nothing in the runner catches it."""


def die(_seconds: float) -> None:
    """A runner `sleep` that kills the worker at its first wait (a `WorkerKilled`)."""
    raise WorkerKilled


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def operator() -> Actor:
    return Actor.system("tests")


def member(code: str, **overrides) -> dict:
    values = {
        "employee_code": code,
        "first_name": "Asha",
        "last_name": "Rao",
        "date_of_birth": date(1990, 5, 17),
        "sum_insured": 500_000_00,
        "start_date": date(2026, 4, 1),
    }
    values.update(overrides)
    return values


@pytest.fixture
def covered_policy() -> Callable[..., Policy]:
    """A sandbox-rest policy with `count` members covered in Keel and the same members at the sandbox."""

    def _make(count: int, *, at_insurer: bool = True, policy: Policy | None = None) -> Policy:
        policy = policy or PolicyFactory()
        members = [member(f"E{n:05d}") for n in range(count)]
        for m in members:
            employee = Employee.objects.create(
                employer=policy.employer,
                employee_code=m["employee_code"],
                first_name=m["first_name"],
                last_name=m["last_name"],
                date_of_birth=m["date_of_birth"],
                gender="female",
            )
            Coverage.objects.create(
                employee=employee, policy=policy, sum_insured=m["sum_insured"], start_date=m["start_date"]
            )
        if at_insurer:
            sandbox_roster_load(code=SANDBOX, policy_number=policy.policy_number, members=members)
        return policy

    return _make


@pytest.fixture
def start_run(operator) -> Callable[..., ReconciliationRun]:
    def _start(policy: Policy, *, employer_id: int | None = -1) -> ReconciliationRun:
        employer = policy.employer_id if employer_id == -1 else employer_id
        return reconciliation_start(
            insurer_id=policy.insurer_id,
            employer_ids=scope_employer_ids(insurer_id=policy.insurer_id, employer_id=employer),
            employer_id=employer,
            policy_id=None,
            partner_id=None,
            actor=operator,
            queue=False,  # the tests execute the run themselves (`reconciliation_execute`)
        )

    return _start


SYSTEM = Actor.system("tests")
TODAY = date(2026, 6, 1)


def sandbox_roster_from_keel(policy: Policy, *, code: str = SANDBOX) -> None:
    """Make sandbox `code`'s roster of `policy` what Keel covers (the insurer applied everything)."""
    sandbox_roster_load(
        code=code,
        policy_number=policy.policy_number,
        members=[
            {
                "employee_code": c.employee.employee_code,
                "first_name": c.employee.first_name,
                "last_name": c.employee.last_name,
                "date_of_birth": c.employee.date_of_birth,
                "sum_insured": c.sum_insured,
                "start_date": c.start_date,
            }
            for c in Coverage.objects.select_related("employee").filter(policy=policy, status="active")
        ],
    )


def policy_with_active_additions(*, insurer: Insurer, make_key, pump: Callable[[], None]) -> Policy:
    """A funded policy of `insurer` with three additions (`M-0`…`M-2`, effective `TODAY`) sent through the API and
    brought to ACTIVE by `pump` (the pipeline of the insurer's protocol), the sandbox's roster what Keel covers."""
    policy = PolicyFactory(insurer=insurer)
    client = make_key(partner=policy.employer.partner, all_employers=True)
    ledger.topup_post(employer_id=policy.employer_id, amount=1_000_000_00, reference="topup-recon", actor=SYSTEM)
    for n in range(3):
        response = client.post("/api/v1/endorsements", addition(policy, f"M-{n}", effective=TODAY))
        assert response.status_code == 202, response.content
    pump()
    assert set(Endorsement.objects.values_list("status", flat=True)) == {EndorsementStatus.ACTIVE}
    sandbox_roster_from_keel(policy, code=insurer.code)
    return policy


@pytest.fixture
def active_policy(live_server, make_key, time_machine, require_postgres):
    """A sandbox-rest policy with three additions ACTIVE through the pipeline, the sandbox roster matching."""
    time_machine.move_to(timezone.make_aware(timezone.datetime(2026, 6, 1, 10, 0)), tick=True)
    [insurer] = sandbox_register(base_url=live_server.url)
    return policy_with_active_additions(insurer=insurer, make_key=make_key, pump=run_pipeline)
