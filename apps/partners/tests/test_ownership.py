"""Partners asks which partner owns an employer through the resolver employers registers (ADR 0039)."""

from __future__ import annotations

import pytest

from apps.employers.tests.factories import EmployerFactory
from apps.partners import ownership
from apps.partners.tests.factories import PartnerFactory


@pytest.mark.django_db
def test_the_registered_resolver_maps_existing_employers_to_their_partners():
    mine, theirs = PartnerFactory(), PartnerFactory()
    a, b = EmployerFactory(partner=mine), EmployerFactory(partner=theirs)

    assert ownership.employer_partners([a.pk, b.pk, b.pk, 999_999]) == {a.pk: mine.pk, b.pk: theirs.pk}
    assert ownership.employer_partners([]) == {}


def test_without_a_resolver_it_says_which_app_is_missing(monkeypatch):
    monkeypatch.setattr(ownership, "_resolver", None)

    with pytest.raises(RuntimeError, match=r"apps\.employers"):
        ownership.employer_partners([1])
