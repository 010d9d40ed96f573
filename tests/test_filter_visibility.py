"""A list filter naming an object the key may not see is 404, as the object's own path is (SPEC §2: "a key for
employer A gets 404 for everything of employer B"; ADR 0064, amendment 2) — never the empty page a foreign id got.

The table is generated from the code: every GET operation of the OpenAPI schema whose view's filter set declares a
`VisibleIdFilter`, each such parameter, and three objects of its kind — the key's own (200), one of the same
partner's that the key is not bound to, and another partner's (both 404 naming the kind, nothing else said).
A filter added tomorrow as a `VisibleIdFilter` is walked without a new line here; `test_every_object_filter_is_a
_visible_id_filter` makes sure an id filter over an object a key can be refused is not declared as a bare one.
"""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import resolve
from test_input_kinds import PROBLEM, SCHEMA

from apps.common.filters import IdFilter, VisibleIdFilter
from apps.employers.tests.factories import EmployerFactory
from apps.endorsements.models import EndorsementBatch
from apps.endorsements.tests.factories import PolicyFactory
from apps.partners.tests.factories import PartnerFactory

pytestmark = pytest.mark.django_db

# Id filters that name no tenant object (a position in the events' commit order), or whose tenancy the view
# answers itself (the events list: 403 for a type's scope first, then 404 for the employer, ADR 0064).
NOT_OBJECT_FILTERS = {("/api/v1/events", "after"), ("/api/v1/events", "employer")}


def _filterset(path: str) -> Any:
    """The filter set class of the view at `path` (None for a function view or a view without one)."""
    view = getattr(resolve(path).func, "view_class", None)
    return getattr(view, "filterset_class", None)


def _id_filters() -> list[tuple[str, str, IdFilter]]:
    """(path, parameter, filter) for every id filter of every GET list in the schema."""
    found = []
    for path, operations in SCHEMA["paths"].items():
        filterset = _filterset(path) if "get" in operations and "{" not in path else None
        for name, filter_ in filterset.base_filters.items() if filterset else ():
            if isinstance(filter_, IdFilter):
                found.append((path, name, filter_))
    return sorted(found, key=lambda row: row[:2])


LIST_FILTERS = [(path, name, f.noun) for path, name, f in _id_filters() if isinstance(f, VisibleIdFilter)]


def _batch(policy) -> EndorsementBatch:
    return EndorsementBatch.objects.create(
        employer=policy.employer,
        policy=policy,
        partner_id=policy.employer.partner_id,
        source="json",
        total_rows=0,
        accepted=0,
        rejected=0,
    )


def _objects(noun: str) -> dict[str, Any]:
    """The key's own object of `noun`, a sibling (same partner, an employer the key is not bound to) and a foreign
    one (another partner's), with the key's employer."""
    partner = PartnerFactory(name="acme")
    mine, sibling = EmployerFactory(partner=partner), EmployerFactory(partner=partner)
    foreign = EmployerFactory(partner=PartnerFactory(name="other"))
    policies = {
        name: PolicyFactory(employer=e) for name, e in (("mine", mine), ("sibling", sibling), ("foreign", foreign))
    }
    if noun == "employer":
        objects = {"mine": mine, "sibling": sibling, "foreign": foreign}
    elif noun == "policy":
        objects = policies
    elif noun == "batch":
        objects = {name: _batch(policy) for name, policy in policies.items()}
    else:
        raise AssertionError(f"a VisibleIdFilter over {noun!r}: teach this table to make one")
    return {"partner": partner, "employer": mine, **objects}


def test_the_table_walks_every_object_filter():
    assert {(path, name) for path, name, _ in LIST_FILTERS} >= {
        ("/api/v1/endorsements", "employer"),
        ("/api/v1/endorsements", "batch"),
        ("/api/v1/endorsement-batches", "employer"),
        ("/api/v1/endorsement-batches", "policy"),
        ("/api/v1/policies", "employer"),
        ("/api/v1/employees", "employer"),
        ("/api/v1/coverages", "employer"),
        ("/api/v1/coverages", "policy"),
        ("/api/v1/reconciliations", "employer"),
    }


def test_every_object_filter_is_a_visible_id_filter():
    bare = [(path, name) for path, name, filter_ in _id_filters() if type(filter_) is IdFilter]
    assert sorted(set(bare) - NOT_OBJECT_FILTERS) == []


@pytest.mark.parametrize(("path", "name", "noun"), LIST_FILTERS)
def test_a_filter_naming_an_object_the_key_may_not_see_is_404(make_key, path, name, noun):
    world = _objects(noun)
    key = make_key(partner=world["partner"], employers=[world["employer"]])

    own = key.get(path, {name: world["mine"].pk})
    assert own.status_code == 200, own.content

    for whose in ("sibling", "foreign", None):
        value = world[whose].pk if whose else 10**12  # an id nobody has
        response = key.get(path, {name: value})
        assert response.status_code == 404, (whose, response.content)
        assert response["Content-Type"] == PROBLEM
        body = response.json()
        assert body["detail"] == f"No {noun} with this id."
        assert set(body) == {"type", "title", "status", "detail", "instance", "request_id"}  # nothing of the object
