from __future__ import annotations

import factory

from apps.employers.models import Employer
from apps.insurers.models import Insurer
from apps.partners.tests.factories import PartnerFactory


class InsurerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Insurer
        django_get_or_create = ("code",)

    code = factory.Sequence(lambda n: f"insurer-{n}")
    name = factory.LazyAttribute(lambda o: o.code.title())


class EmployerFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Employer

    partner = factory.SubFactory(PartnerFactory)
    name = factory.Sequence(lambda n: f"Employer {n}")
    external_ref = factory.Sequence(lambda n: f"EMP-{n:05d}")
    contact_email = factory.LazyAttribute(lambda o: f"hr@{o.external_ref.lower()}.example")
