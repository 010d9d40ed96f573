"""Reads of loan applications. Tenancy: an application belongs to the partner that created it."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet
from django.http import Http404

from apps.loan_applications.models import LoanApplication
from apps.partners.contracts import Principal


def loan_applications_visible_to(principal: Principal) -> QuerySet[LoanApplication]:
    return LoanApplication.objects.filter(partner_id=principal.partner_id)


def loan_application_get_for(principal: Principal, application_id: uuid.UUID) -> LoanApplication:
    """The caller's own application, else 404 (another partner's application does not exist for it)."""
    application = loan_applications_visible_to(principal).filter(pk=application_id).first()
    if application is None:
        raise Http404("No loan application with this id.")
    return application
