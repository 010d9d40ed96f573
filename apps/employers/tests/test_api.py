"""Employers API, and through it every cross-cutting feature of the partner platform (SPEC §2, §5)."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.employers.models import Employer
from apps.employers.tests.factories import EmployerFactory, InsurerFactory
from apps.partners.models import Scope
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db

PROBLEM = "application/problem+json"


def assert_problem(response, status: int) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert set(body) >= {"type", "title", "status", "detail", "instance"}
    assert "Traceback" not in response.content.decode()
    return body


@pytest.fixture
def partner():
    return PartnerFactory(name="acme-hr")


@pytest.fixture
def platform(partner, make_key):
    return make_key(partner=partner, all_employers=True)


def test_create_employer_returns_201_and_writes_audit_in_same_transaction(platform):
    response = platform.post(
        "/api/v1/employers",
        {
            "name": "Globex",
            "external_ref": "GLX-1",
            "low_balance_threshold": "5000.50",
            "contact_email": "hr@globex.example",
        },
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["name"] == "Globex"
    assert body["low_balance_threshold"] == "5000.50"
    employer = Employer.objects.get(pk=body["id"])
    assert employer.low_balance_threshold == 500050
    event = AuditEvent.objects.get(action="employer.created")
    assert event.object_id == str(employer.pk)
    assert event.employer_id == employer.pk


def test_validation_failure_is_422_problem_naming_each_field_and_changes_nothing(platform):
    response = platform.post("/api/v1/employers", {"external_ref": "", "low_balance_threshold": "1.234"})

    body = assert_problem(response, 422)
    pointers = {e["pointer"] for e in body["errors"]}
    assert pointers == {"/name", "/external_ref", "/low_balance_threshold"}
    assert Employer.objects.count() == 0
    assert AuditEvent.objects.count() == 1  # only the key creation


def test_duplicate_external_ref_is_409_with_existing_id(platform, partner):
    existing = EmployerFactory(partner=partner, external_ref="DUP")

    body = assert_problem(platform.post("/api/v1/employers", {"name": "X", "external_ref": "DUP"}), 409)

    assert body["existing_id"] == existing.pk
    assert Employer.objects.count() == 1


def test_key_for_employer_a_gets_404_for_everything_of_employer_b(partner, make_key):
    employer_a = EmployerFactory(partner=partner)
    employer_b = EmployerFactory(partner=partner)
    client = make_key(partner=partner, employers=[employer_a])

    assert client.get(f"/api/v1/employers/{employer_a.pk}").status_code == 200
    assert_problem(client.get(f"/api/v1/employers/{employer_b.pk}"), 404)
    assert_problem(client.patch(f"/api/v1/employers/{employer_b.pk}", {"name": "hijack"}), 404)
    listed = [e["id"] for e in client.get("/api/v1/employers").json()["results"]]
    assert listed == [employer_a.pk]
    employer_b.refresh_from_db()
    assert employer_b.name != "hijack"


def test_platform_key_never_sees_another_partners_employers(platform):
    foreign = EmployerFactory(partner=PartnerFactory(name="other"))

    assert_problem(platform.get(f"/api/v1/employers/{foreign.pk}"), 404)
    assert platform.get("/api/v1/employers").json()["results"] == []


def test_non_platform_key_cannot_create_employers(partner, make_key):
    client = make_key(partner=partner, employers=[EmployerFactory(partner=partner)])

    assert_problem(client.post("/api/v1/employers", {"name": "X", "external_ref": "X"}), 403)
    assert Employer.objects.count() == 1


def test_patch_changes_fields_and_audits_only_changed_ones(platform, partner):
    employer = EmployerFactory(partner=partner, name="Old")

    response = platform.patch(f"/api/v1/employers/{employer.pk}", {"name": "New", "status": "suspended"})

    assert response.status_code == 200, response.content
    employer.refresh_from_db()
    assert (employer.name, employer.status) == ("New", "suspended")
    event = AuditEvent.objects.get(action="employer.updated")
    assert set(event.after) == {"name", "status"}


def test_patch_of_external_ref_is_422_and_changes_nothing(platform, partner):
    employer = EmployerFactory(partner=partner, external_ref="KEEP")

    body = assert_problem(platform.patch(f"/api/v1/employers/{employer.pk}", {"external_ref": "NEW"}), 422)

    assert body["errors"][0]["pointer"] == "/external_ref"
    employer.refresh_from_db()
    assert employer.external_ref == "KEEP"


@pytest.mark.parametrize(
    ("header", "expected_detail"),
    [
        (None, "Authentication credentials were not provided."),
        ("Basic abc", "Use the header"),
        ("Bearer abc", "The access token is not valid."),
        ("Api-Key nope.nope", "The API key is not valid."),
    ],
)
def test_missing_or_bad_credentials_are_401(header, expected_detail, client):
    kwargs = {"HTTP_AUTHORIZATION": header} if header else {}

    body = assert_problem(client.get("/api/v1/employers", **kwargs), 401)

    assert body["detail"].startswith(expected_detail)


def test_revoked_key_is_401(platform):
    from apps.common.actors import Actor
    from apps.partners.services import api_key_revoke

    api_key_revoke(prefix=platform.api_key.prefix, actor=Actor.system("tests"))

    assert assert_problem(platform.get("/api/v1/employers"), 401)["detail"] == "The API key has been revoked."


def test_expired_key_is_401(partner, make_key, time_machine):
    time_machine.move_to(timezone.now(), tick=False)
    client = make_key(partner=partner, all_employers=True, expires_at=timezone.now() + timedelta(hours=1))
    assert client.get("/api/v1/employers").status_code == 200

    time_machine.shift(timedelta(hours=2))

    assert assert_problem(client.get("/api/v1/employers"), 401)["detail"] == "The API key has expired."


def test_wrong_secret_with_valid_prefix_is_401(platform):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {platform.api_key.prefix}.{'x' * 32}")

    assert_problem(client.get("/api/v1/employers"), 401)


def test_key_without_scope_is_403(partner, make_key):
    client = make_key(partner=partner, all_employers=True, scopes=[Scope.EMPLOYERS_READ])

    assert client.get("/api/v1/employers").status_code == 200
    body = assert_problem(client.post("/api/v1/employers", {"name": "X", "external_ref": "X"}), 403)
    assert "employers:write" in body["detail"]
    assert Employer.objects.count() == 0


def test_unknown_url_is_404_problem(platform):
    assert_problem(platform.get("/api/v1/no-such-thing"), 404)


def test_unknown_employer_is_404_problem(platform):
    assert_problem(platform.get("/api/v1/employers/999999"), 404)


def test_wrong_method_is_405_problem(platform):
    assert_problem(platform.delete("/api/v1/employers"), 405)


def test_oversized_body_is_413_problem(platform):
    body = '{"name": "' + "x" * 1_100_000 + '"}'

    response = platform.client.generic("POST", "/api/v1/employers", body, content_type="application/json")

    assert_problem(response, 413)
    assert Employer.objects.count() == 0


def test_unsupported_media_type_is_415_problem(platform):
    response = platform.client.generic("POST", "/api/v1/employers", "name=x", content_type="text/plain")

    assert_problem(response, 415)


def test_malformed_json_is_400_problem(platform):
    response = platform.client.generic("POST", "/api/v1/employers", "{not json", content_type="application/json")

    assert_problem(response, 400)


def test_paging_through_120_employers_with_link_visits_each_exactly_once(platform, partner):
    Employer.objects.bulk_create([Employer(partner=partner, name=f"E{i}", external_ref=f"R{i}") for i in range(120)])
    seen: list[int] = []
    url = "/api/v1/employers?limit=50"
    pages = 0
    while url:
        response = platform.get(url)
        assert response.status_code == 200
        seen.extend(e["id"] for e in response.json()["results"])
        pages += 1
        link = response.headers.get("Link", "")
        nxt = [part.split(";")[0].strip("<> ") for part in link.split(",") if 'rel="next"' in part]
        assert (response.json()["next"] is not None) == bool(nxt)
        url = urlsplit(nxt[0])._replace(scheme="", netloc="").geturl() if nxt else None

    assert pages == 3
    assert len(seen) == 120
    assert set(seen) == set(Employer.objects.values_list("id", flat=True))


def test_limit_above_500_is_capped(platform, partner):
    Employer.objects.bulk_create([Employer(partner=partner, name=f"E{i}", external_ref=f"R{i}") for i in range(501)])

    response = platform.get("/api/v1/employers?limit=10000")

    assert len(response.json()["results"]) == 500
    assert 'rel="next"' in response["Link"]


def test_insurers_are_listed_read_only(platform):
    InsurerFactory(code="sandbox-rest", name="Sandbox REST")

    response = platform.get("/api/v1/insurers")

    assert response.status_code == 200
    assert response.json()["results"] == [
        {"code": "sandbox-rest", "name": "Sandbox REST", "protocol": "rest", "is_active": True}
    ]
    assert_problem(platform.post("/api/v1/insurers", {"code": "x"}), 405)


def test_unexpected_error_is_500_problem_without_a_traceback(platform, monkeypatch):
    from apps.employers import selectors

    def broken(principal):
        raise RuntimeError("database exploded: secret detail")

    monkeypatch.setattr(selectors, "employers_visible_to", broken)

    body = assert_problem(platform.get("/api/v1/employers"), 500)

    assert body["detail"] == "An unexpected error occurred."
    assert "secret detail" not in str(body)
