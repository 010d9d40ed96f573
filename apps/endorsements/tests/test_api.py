"""`POST /endorsements` tenancy: a key acts only for its employers (404 for any other), and only with their
policies (422); a refusal writes nothing."""

from __future__ import annotations

from datetime import date

import pytest
from django.utils import timezone

from apps.endorsements.models import Endorsement
from apps.endorsements.tests.factories import PolicyFactory, addition
from apps.outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_employers(time_machine):
    time_machine.move_to(timezone.make_aware(timezone.datetime(2026, 6, 1, 10, 0)), tick=False)
    mine = PolicyFactory()
    same_partner = PolicyFactory(employer__partner=mine.employer.partner)
    other_partner = PolicyFactory()
    return mine, same_partner, other_partner


def nothing_written() -> bool:
    return not Endorsement.objects.exists() and not OutboxMessage.objects.filter(topic="endorsements.process").exists()


def test_a_key_for_one_employer_gets_404_for_another_employer_of_its_partner(make_key, two_employers):
    mine, same_partner, _ = two_employers
    client = make_key(partner=mine.employer.partner, employers=[mine.employer])

    response = client.post("/api/v1/endorsements", addition(same_partner, "E-1", effective=date(2026, 6, 1)))

    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/problem+json")
    assert nothing_written()


def test_a_platform_key_gets_404_for_an_employer_of_another_partner(make_key, two_employers):
    mine, _, other_partner = two_employers
    client = make_key(partner=mine.employer.partner, all_employers=True)

    response = client.post("/api/v1/endorsements", addition(other_partner, "E-1", effective=date(2026, 6, 1)))

    assert response.status_code == 404
    assert nothing_written()


@pytest.mark.parametrize("all_employers", [True, False])
def test_a_policy_of_another_employer_is_422_on_the_policy_field(make_key, two_employers, all_employers):
    mine, same_partner, _ = two_employers
    scope = {"all_employers": True} if all_employers else {"employers": [mine.employer, same_partner.employer]}
    client = make_key(partner=mine.employer.partner, **scope)
    body = {**addition(mine, "E-1", effective=date(2026, 6, 1)), "policy": same_partner.pk}

    response = client.post("/api/v1/endorsements", body)

    assert response.status_code == 422
    assert "policy" in str(response.json())
    assert nothing_written()


def test_the_right_employer_and_policy_are_accepted(make_key, two_employers):
    mine, _, _ = two_employers
    client = make_key(partner=mine.employer.partner, employers=[mine.employer])

    response = client.post("/api/v1/endorsements", addition(mine, "E-1", effective=date(2026, 6, 1)))

    assert response.status_code == 202, response.content
    assert (response.json()["employer"], response.json()["policy"]) == (mine.employer_id, mine.pk)
