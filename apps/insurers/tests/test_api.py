from __future__ import annotations

import pytest

from apps.employers.tests.factories import InsurerFactory
from apps.partners.models import Scope
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db


def test_circuit_of_a_healthy_insurer_is_closed(make_key) -> None:
    InsurerFactory(code="acme-life")
    client = make_key(partner=PartnerFactory(), scopes=[Scope.EMPLOYERS_READ], all_employers=True)

    response = client.get("/api/v1/insurers/acme-life/circuit")

    assert response.status_code == 200
    assert response.json() == {"insurer": "acme-life", "state": "closed", "failure_count": 0, "opened_at": None}


def test_circuit_of_an_unknown_insurer_is_404(make_key) -> None:
    client = make_key(partner=PartnerFactory(), scopes=[Scope.EMPLOYERS_READ], all_employers=True)

    response = client.get("/api/v1/insurers/nobody/circuit")

    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"


def test_circuit_needs_the_employers_read_scope(make_key) -> None:
    InsurerFactory(code="acme-life")
    client = make_key(partner=PartnerFactory(), scopes=[Scope.LOANS_READ], all_employers=True)

    assert client.get("/api/v1/insurers/acme-life/circuit").status_code == 403


def test_circuit_needs_an_api_key(client) -> None:
    InsurerFactory(code="acme-life")

    assert client.get("/api/v1/insurers/acme-life/circuit").status_code == 401
