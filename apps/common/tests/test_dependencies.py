"""PostgreSQL unavailable → 503 problem+json with Retry-After, for every kind of outage error (SPEC §12)."""

from __future__ import annotations

import pytest
from django.db import DataError, IntegrityError, InterfaceError, OperationalError
from psycopg_pool import PoolTimeout

from apps.common.dependencies import RETRY_AFTER_SECONDS, is_database_unavailable
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db

OUTAGES = [
    OperationalError("connection to server at 127.0.0.1 failed: Connection refused"),
    InterfaceError("connection already closed"),
    PoolTimeout("couldn't get a connection after 1.50 sec"),
]


@pytest.mark.parametrize("error", OUTAGES, ids=lambda e: type(e).__name__)
def test_an_api_call_during_a_database_outage_is_503_problem_json_with_retry_after(make_key, monkeypatch, error):
    client = make_key(partner=PartnerFactory(), all_employers=True)

    def down(*args, **kwargs):
        raise error

    monkeypatch.setattr("apps.employers.api.views.employers_visible_to", down, raising=False)
    monkeypatch.setattr("apps.partners.api.base.rate_limit_hit", down)
    response = client.get("/api/v1/employers")

    assert response.status_code == 503
    assert response["Content-Type"].startswith("application/problem+json")
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    body = response.json()
    assert body["status"] == 503
    assert body["instance"] == "/api/v1/employers"
    assert "database is unavailable" in body["detail"]


@pytest.mark.parametrize("error", OUTAGES, ids=lambda e: type(e).__name__)
def test_a_database_outage_in_a_non_api_view_is_503_too(rf, error):
    from apps.common.dependencies import DependencyUnavailableMiddleware

    middleware = DependencyUnavailableMiddleware(lambda request: None)  # type: ignore[arg-type, return-value]
    request = rf.get("/admin/")

    response = middleware.process_exception(request, error)

    assert response is not None
    assert response.status_code == 503
    assert response["Retry-After"] == str(RETRY_AFTER_SECONDS)
    assert middleware.process_exception(request, ValueError("a bug")) is None  # still a 500, by errors.py


@pytest.mark.parametrize(
    ("error", "unavailable"),
    [
        *[(e, True) for e in OUTAGES],
        (IntegrityError("duplicate key value violates unique constraint"), False),
        (DataError("value too long"), False),
        (ValueError("bad input"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v),
)
def test_only_outages_count_as_the_database_being_unavailable(error, unavailable):
    assert is_database_unavailable(error) is unavailable
    wrapped = RuntimeError("while serving")
    wrapped.__cause__ = error
    assert is_database_unavailable(wrapped) is unavailable
