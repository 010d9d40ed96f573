"""The same-run limits of bench/request_cost.py exist only under config.settings.bench (issue 15).

The shipped URLconf and the OpenAPI schema have no bench route; under `bench.urls` the bare create endpoint
is a real partner endpoint: API-key authentication, scope, problem+json on bad input, one row per request.
"""

from __future__ import annotations

import pytest
from django.db import connection
from django.test import override_settings
from django.urls import NoReverseMatch, reverse

from apps.partners.models import Partner, Scope
from bench.limits import CREATE_TABLE_SQL

pytestmark = pytest.mark.django_db


def test_shipped_urlconf_has_no_bench_route(client):
    with pytest.raises(NoReverseMatch):
        reverse("bench-bare-create")
    assert client.get("/bench/bare-json").status_code == 404
    schema = client.get("/api/schema/?format=json").json()
    assert [path for path in schema["paths"] if "bench" in path] == []


@override_settings(ROOT_URLCONF="bench.urls")
def test_bare_create_is_a_partner_endpoint_doing_one_insert(make_key, client):
    partner = Partner.objects.create(name="bench limit partner")
    with connection.cursor() as cursor:
        cursor.execute(CREATE_TABLE_SQL)
    writer = make_key(partner=partner, scopes=[Scope.ENDORSEMENTS_WRITE], all_employers=True)
    reader = make_key(partner=partner, scopes=[Scope.ENDORSEMENTS_READ], all_employers=True)

    assert client.post("/api/v1/bench/bare-create", {"note": "x"}, content_type="application/json").status_code == 401
    assert reader.post("/api/v1/bench/bare-create", {"note": "x"}).status_code == 403
    bad = writer.post("/api/v1/bench/bare-create", {"note": ""})
    assert bad.status_code == 422
    assert bad["Content-Type"].startswith("application/problem+json")
    assert bad.json()["errors"] == [{"pointer": "/note", "detail": "a string of 1 to 64 characters"}]
    created = writer.post("/api/v1/bench/bare-create", {"note": "one"})
    assert created.status_code == 201
    with connection.cursor() as cursor:
        cursor.execute("SELECT id, note FROM bench_limit")
        assert cursor.fetchall() == [(created.json()["id"], "one")]
    assert client.get("/bench/bare-json").json() == {"ok": True}
