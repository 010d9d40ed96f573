from __future__ import annotations

import itertools

import factory

from apps.common.actors import Actor
from apps.employers.tests.factories import EmployerFactory
from apps.ledger import services
from apps.ledger.models import AccountKind, LedgerAccount

SYSTEM = Actor.system("tests")
_refs = itertools.count(1)


def next_reference(prefix: str = "ref") -> str:
    return f"{prefix}-{next(_refs)}"


class LedgerAccountFactory(factory.django.DjangoModelFactory):
    """An empty employer account. Balances only ever change through the services (see `funded_employer`)."""

    class Meta:
        model = LedgerAccount

    kind = AccountKind.EMPLOYER
    employer = factory.SubFactory(EmployerFactory)


def funded_employer(amount: int = 0, **employer_fields):
    """An employer whose account holds `amount` paise, posted through `topup_post` like real money."""
    employer = EmployerFactory(**employer_fields)
    if amount:
        services.topup_post(employer_id=employer.pk, amount=amount, reference=next_reference("fund"), actor=SYSTEM)
    return employer
