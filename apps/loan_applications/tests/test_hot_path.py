"""`POST /loan-applications` on the hot path (issue 15, SPEC §12): its query count pinned, and the accepted
document written out equal to what `LoanApplicationAcceptedSerializer` gives."""

from __future__ import annotations

import pytest
from django.utils import timezone

from apps.loan_applications.api.serializers import LoanApplicationAcceptedSerializer
from apps.loan_applications.models import LoanApplication
from apps.loan_applications.tests.factories import LoanApplicationPayloadFactory
from apps.partners.models import APIKey

pytestmark = pytest.mark.django_db


def test_post_loan_application_makes_a_pinned_number_of_queries(loans, django_assert_num_queries):
    # The key's once-a-minute `last_used_at` write is not part of a request's steady cost.
    APIKey.objects.filter(pk=loans.api_key.pk).update(last_used_at=timezone.now())

    # key, savepoint, PAN lock, duplicate check, insert, audit, outbox, release savepoint
    with django_assert_num_queries(8):
        response = loans.post("/api/v1/loan-applications", LoanApplicationPayloadFactory(pan_number="KLMNP4321Q"))

    assert response.status_code == 202, response.content
    assert LoanApplication.objects.count() == 1

    # The key is now in the principal cache (ADR 0054): the next request skips its look-up.
    with django_assert_num_queries(7):
        response = loans.post("/api/v1/loan-applications", LoanApplicationPayloadFactory(pan_number="FGHIJ5678K"))

    assert response.status_code == 202, response.content
    assert LoanApplication.objects.count() == 2


def test_the_accepted_document_is_the_serializers(loans):
    response = loans.post("/api/v1/loan-applications", LoanApplicationPayloadFactory(pan_number="KLMNP4321Q"))

    stored = LoanApplication.objects.get()
    assert response.json() == LoanApplicationAcceptedSerializer({"id": stored.pk, "status": stored.status}).data
    assert response.json() == {"id": str(stored.pk), "status": "PENDING"}
