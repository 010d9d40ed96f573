"""The hot paths of issue 15 (SPEC §12): query counts pinned, and the hand-written representations and SQL equal
what DRF's generic serializer and the ORM give, field for field."""

from __future__ import annotations

from datetime import date

import pytest
from django.db import connection
from django.utils import timezone
from rest_framework import serializers

from apps.employers import selectors as employer_selectors
from apps.endorsements import selectors
from apps.endorsements.api.serializers import EndorsementDetailSerializer, EndorsementSerializer
from apps.endorsements.models import Endorsement, EndorsementHistory
from apps.endorsements.tests.factories import PolicyFactory, addition
from apps.partners.api.base import NO_ACCESS
from apps.partners.contracts import Principal
from apps.partners.models import APIKey
from apps.partners.principal_cache import principal_cache

pytestmark = pytest.mark.django_db


@pytest.fixture
def policy(time_machine):
    time_machine.move_to(timezone.make_aware(timezone.datetime(2026, 6, 1, 10, 0)), tick=False)
    return PolicyFactory()


def principal(policy, *, all_employers: bool = True, employer_ids: frozenset[int] = frozenset()) -> Principal:
    return Principal(
        partner_id=policy.employer.partner_id,
        partner_name="p",
        key_prefix="k",
        scopes=frozenset(),
        all_employers=all_employers,
        employer_ids=employer_ids,
        rate_limits={},
    )


def submitted(make_key, policy, code: str = "E-1"):
    client = make_key(partner=policy.employer.partner, all_employers=True)
    response = client.post("/api/v1/endorsements", addition(policy, code, effective=date(2026, 6, 1)))
    assert response.status_code == 202, response.content
    return client, response.json()


def used_just_now(client) -> None:
    """The key's once-a-minute `last_used_at` write is not part of a request's steady cost."""
    APIKey.objects.filter(pk=client.api_key.pk).update(last_used_at=timezone.now())


def generic(serializer: serializers.Serializer, instance: object) -> dict:  # type: ignore[type-arg]
    """DRF's own `Serializer.to_representation`, which the hand-written ones replace."""
    return dict(serializers.Serializer.to_representation(serializer, instance))


def test_post_endorsements_makes_a_pinned_number_of_queries(make_key, policy, django_assert_num_queries):
    client = make_key(partner=policy.employer.partner, all_employers=True)
    used_just_now(client)
    body = addition(policy, "E-1", effective=date(2026, 6, 1))

    # key, policy+employer, savepoint, member lock, duplicate check, member projection, insert, history,
    # audit, event sequence, partner event, outbox, release savepoint
    with django_assert_num_queries(13):
        response = client.post("/api/v1/endorsements", body)

    assert response.status_code == 202, response.content
    assert Endorsement.objects.count() == 1

    # The key is now in the principal cache (ADR 0054): the next request skips its look-up.
    with django_assert_num_queries(12):
        response = client.post("/api/v1/endorsements", addition(policy, "E-2", effective=date(2026, 6, 1)))

    assert response.status_code == 202, response.content
    assert Endorsement.objects.count() == 2


def test_get_endorsement_makes_two_queries_and_answers_what_the_generic_serializer_would(
    make_key, policy, django_assert_num_queries
):
    client, created = submitted(make_key, policy)
    EndorsementHistory.objects.create(
        endorsement_id=created["id"], from_status="RECEIVED", to_status="VALIDATED", detail="ok", actor="t"
    )

    principal_cache.clear()
    with django_assert_num_queries(2):  # the key; the endorsement joined to its employer and history
        response = client.get(f"/api/v1/endorsements/{created['id']}")
    with django_assert_num_queries(1):  # the key is in the principal cache now (ADR 0054)
        assert client.get(f"/api/v1/endorsements/{created['id']}").json() == response.json()

    assert response.status_code == 200
    stored = Endorsement.objects.get(pk=created["id"])
    expected = generic(EndorsementDetailSerializer(stored), stored)
    expected["history"] = [dict(h) for h in expected["history"]]
    assert response.json() == expected
    assert [h["status"] for h in response.json()["history"]] == ["RECEIVED", "VALIDATED"]
    assert {k: v for k, v in response.json().items() if k != "history"} == created


def test_the_endorsement_representation_equals_the_generic_one_with_every_optional_field_set(policy, make_key):
    _, created = submitted(make_key, policy)
    Endorsement.objects.filter(pk=created["id"]).update(
        insurer_reference="INS-9", rejection_class="member", rejection_reason="too old", sum_insured=None
    )
    stored = Endorsement.objects.get(pk=created["id"])

    assert EndorsementSerializer(stored).data == generic(EndorsementSerializer(stored), stored)
    assert EndorsementSerializer(stored).data["sum_insured"] is None
    assert EndorsementSerializer(stored).data["rejection_reason"] == "too old"


def test_an_endorsement_without_history_is_shown_with_an_empty_history(policy, make_key):
    _, created = submitted(make_key, policy)
    EndorsementHistory.objects.filter(endorsement_id=created["id"]).delete()

    endorsement, history = selectors.endorsement_detail_for(principal(policy), created["id"])

    assert (endorsement.pk, history) == (created["id"], [])


def test_get_endorsement_is_404_outside_the_keys_employers(policy, make_key):
    _, created = submitted(make_key, policy)
    same_partner = PolicyFactory(employer__partner=policy.employer.partner)
    other_partner = PolicyFactory()
    bound = make_key(partner=policy.employer.partner, employers=[same_partner.employer])
    foreign = make_key(partner=other_partner.employer.partner, all_employers=True)

    assert bound.get(f"/api/v1/endorsements/{created['id']}").status_code == 404
    assert foreign.get(f"/api/v1/endorsements/{created['id']}").status_code == 404
    with pytest.raises(Exception) as raised:
        selectors.endorsement_detail_for(NO_ACCESS, created["id"])
    assert raised.type.__name__ == "Http404"


def test_the_policy_with_its_employer_equals_the_orm_field_for_field(policy):
    assert connection.vendor == "postgresql"  # the hand-written statement is the PostgreSQL path
    found = employer_selectors.policy_with_employer_for(
        principal(policy), employer_id=policy.employer_id, policy_id=policy.pk
    )

    assert found is not None
    orm = type(policy).objects.select_related("employer").get(pk=policy.pk)
    for field in type(policy)._meta.concrete_fields:
        assert getattr(found, field.attname) == getattr(orm, field.attname), field.attname
    for field in type(policy.employer)._meta.concrete_fields:
        assert getattr(found.employer, field.attname) == getattr(orm.employer, field.attname), field.attname
    assert type(found.premium_rate_per_mille) is type(orm.premium_rate_per_mille)


def test_the_policy_is_none_for_another_partner_or_employer(policy):
    other = PolicyFactory()
    mine = principal(policy)

    assert employer_selectors.policy_with_employer_for(mine, employer_id=other.employer_id, policy_id=other.pk) is None
    assert employer_selectors.policy_with_employer_for(mine, employer_id=policy.employer_id, policy_id=other.pk) is None
    bound = principal(policy, all_employers=False, employer_ids=frozenset({other.employer_id}))
    assert (
        employer_selectors.policy_with_employer_for(bound, employer_id=policy.employer_id, policy_id=policy.pk) is None
    )
