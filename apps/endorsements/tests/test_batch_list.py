"""GET /api/v1/endorsement-batches: the batches of the key's employers, newest first, with filters."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from apps.employers.tests.factories import EmployerFactory
from apps.endorsements.models import EndorsementBatch
from apps.endorsements.tests.factories import PolicyFactory
from apps.partners.models import Scope
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db
URL = "/api/v1/endorsement-batches"


def batch(policy, **fields) -> EndorsementBatch:
    return EndorsementBatch.objects.create(
        employer=policy.employer, policy=policy, partner_id=policy.employer.partner_id, source="json",
        total_rows=3, accepted=2, rejected=1, errors=[{"row": 3, "field": "email", "detail": "bad"}], **fields,
    )  # fmt: skip


@pytest.fixture
def world():
    partner = PartnerFactory()
    a, b = EmployerFactory(partner=partner), EmployerFactory(partner=partner)
    pa, pb = PolicyFactory(employer=a), PolicyFactory(employer=b)
    other = PolicyFactory()  # another partner's employer
    now = timezone.now()
    rows = {
        "a_processing": batch(pa),
        "a_completed": batch(pa, completed_at=now),
        "a_cancelled": batch(pa, cancelled_at=now),
        "b_processing": batch(pb),
        "other": batch(other),
    }
    return {"partner": partner, "a": a, "b": b, "rows": rows}


def ids(response) -> list[int]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


def test_lists_the_keys_batches_newest_first_without_row_errors(world, make_key):
    client = make_key(partner=world["partner"], scopes=[Scope.ENDORSEMENTS_READ], all_employers=True)
    rows = world["rows"]
    response = client.get(URL)
    assert ids(response) == sorted((r.pk for k, r in rows.items() if k != "other"), reverse=True)
    first = response.json()["results"][0]
    assert first["status"] == "processing"
    assert "errors" not in first
    assert first["accepted"] == 2


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"status": "processing"}, ["b_processing", "a_processing"]),
        ({"status": "completed"}, ["a_completed"]),
        ({"status": "cancelled"}, ["a_cancelled"]),
        ({"source": "csv"}, []),
    ],
)
def test_filters(world, make_key, params, expected):
    client = make_key(partner=world["partner"], scopes=[Scope.ENDORSEMENTS_READ], all_employers=True)
    assert ids(client.get(URL, params)) == [world["rows"][k].pk for k in expected]


def test_employer_and_time_filters_and_tenancy(world, make_key):
    client = make_key(partner=world["partner"], scopes=[Scope.ENDORSEMENTS_READ], employers=[world["a"]])
    rows = world["rows"]
    assert ids(client.get(URL)) == [rows["a_cancelled"].pk, rows["a_completed"].pk, rows["a_processing"].pk]
    refused = client.get(URL, {"employer": world["b"].pk})  # not this key's employer: 404 (ADR 0064, amendment 2)
    assert (refused.status_code, refused.json()["detail"]) == (404, "No employer with this id.")
    later = (timezone.now() + timedelta(minutes=1)).isoformat()
    assert ids(client.get(URL, {"created_after": later})) == []
    assert len(ids(client.get(URL, {"created_before": later}))) == 3


def test_bad_filter_values_are_4xx_not_5xx(world, make_key):
    client = make_key(partner=world["partner"], scopes=[Scope.ENDORSEMENTS_READ], all_employers=True)
    for params in ({"status": "nope"}, {"employer": "x"}, {"created_after": "yesterday"}):
        response = client.get(URL, params)
        assert 400 <= response.status_code < 500, (params, response.status_code)
