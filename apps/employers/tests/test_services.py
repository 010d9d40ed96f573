"""Bulk writes used by the activation of many endorsements at once."""

from __future__ import annotations

from datetime import date

import pytest
from django.db import IntegrityError, transaction

from apps.common.actors import Actor
from apps.common.errors import DomainValidationError
from apps.employers import services
from apps.employers.models import Coverage, CoverageChange, Employee
from apps.employers.tests.factories import EmployerFactory
from apps.endorsements.tests.factories import PolicyFactory

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("tests")


def details(first: str) -> dict:
    return {"first_name": first, "last_name": "Rao", "date_of_birth": date(1990, 1, 1), "gender": "female"}


def test_employees_upsert_many_creates_new_updates_changed_and_leaves_the_rest():
    employer, other = EmployerFactory(), EmployerFactory()
    same = Employee.objects.create(employer=employer, employee_code="SAME", **details("Asha"))
    changed = Employee.objects.create(employer=employer, employee_code="CHG", **details("Old"))
    elsewhere = Employee.objects.create(employer=other, employee_code="NEW", **details("Other"))
    stamp = Employee.objects.get(pk=same.pk).updated_at

    result = services.employees_upsert_many(
        employer_id=employer.pk, members={"SAME": details("Asha"), "CHG": details("New"), "NEW": details("Nia")}
    )

    assert sorted(e.employee_code for e in result) == ["CHG", "NEW", "SAME"]
    rows = dict(Employee.objects.filter(employer=employer).values_list("employee_code", "first_name"))
    assert rows == {"SAME": "Asha", "CHG": "New", "NEW": "Nia"}
    assert Employee.objects.get(pk=same.pk).updated_at == stamp
    assert Employee.objects.get(pk=changed.pk).updated_at > stamp
    assert Employee.objects.get(pk=elsewhere.pk).first_name == "Other"


def test_coverages_start_many_writes_each_coverage_with_its_started_change():
    policy = PolicyFactory()
    [a, b] = services.employees_upsert_many(
        employer_id=policy.employer_id, members={"A": details("A"), "B": details("B")}
    )
    starts = [
        services.CoverageStart(
            employee=a, policy=policy, sum_insured=100, start_date=date(2026, 6, 1), endorsement_id=1
        ),
        services.CoverageStart(
            employee=b, policy=policy, sum_insured=200, start_date=date(2026, 6, 2), endorsement_id=2
        ),
    ]

    services.coverages_start_many(starts=starts, actor=SYSTEM)

    got = Coverage.objects.order_by("employee__employee_code").values_list("employee__employee_code", "sum_insured")
    assert list(got) == [("A", 100), ("B", 200)]
    assert list(CoverageChange.objects.order_by("endorsement_id").values_list("endorsement_id", "action", "diff")) == [
        (1, "started", {"sum_insured": [None, 100], "start_date": [None, "2026-06-01"]}),
        (2, "started", {"sum_insured": [None, 200], "start_date": [None, "2026-06-02"]}),
    ]
    with pytest.raises(IntegrityError), transaction.atomic():  # one active coverage per member and policy
        services.coverages_start_many(starts=starts[:1], actor=SYSTEM)
    assert Coverage.objects.count() == 2


def test_coverages_end_many_ends_each_with_its_date_and_refuses_a_coverage_no_longer_active():
    policy = PolicyFactory()
    [a, b] = services.employees_upsert_many(
        employer_id=policy.employer_id, members={"A": details("A"), "B": details("B")}
    )
    started = services.coverages_start_many(
        starts=[
            services.CoverageStart(
                employee=e, policy=policy, sum_insured=100, start_date=date(2026, 6, 1), endorsement_id=n
            )
            for n, e in enumerate((a, b), start=1)
        ],
        actor=SYSTEM,
    )

    services.coverages_end_many(
        ends=[services.CoverageEnd(coverage=started[0], end_date=date(2026, 6, 30), endorsement_id=3)], actor=SYSTEM
    )
    before = list(Coverage.objects.order_by("id").values_list("status", "end_date"))
    with pytest.raises(DomainValidationError):
        services.coverages_end_many(
            ends=[
                services.CoverageEnd(coverage=started[1], end_date=date(2026, 7, 31), endorsement_id=4),
                services.CoverageEnd(coverage=started[0], end_date=date(2026, 7, 31), endorsement_id=4),
            ],
            actor=SYSTEM,
        )

    assert before == [("ended", date(2026, 6, 30)), ("active", None)]
    assert list(Coverage.objects.order_by("id").values_list("status", "end_date")) == before
    assert list(CoverageChange.objects.filter(action="ended").values_list("endorsement_id", "diff")) == [
        (3, {"status": ["active", "ended"], "end_date": [None, "2026-06-30"]})
    ]
