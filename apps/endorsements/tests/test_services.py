"""Endorsement services: validation, duplicates, velocity breaker, concurrency of holds, park and wake."""

from __future__ import annotations

import threading
from datetime import date, timedelta
from decimal import Decimal

import pytest
from django.db import connection, transaction
from django.utils import timezone

from apps.common.actors import Actor
from apps.common.errors import Conflict, DomainValidationError
from apps.employers.models import Employee, Policy
from apps.endorsements import services
from apps.endorsements.models import Endorsement, EndorsementStatus
from apps.endorsements.parsing import draft_from_request
from apps.endorsements.tests.factories import PolicyFactory, addition, deletion
from apps.ledger import services as ledger
from apps.ledger.selectors import balance_get
from apps.outbox.models import OutboxMessage

S = EndorsementStatus
SYSTEM = Actor.system("tests")


def submit(policy: Policy, body: dict) -> Endorsement:
    return services.endorsement_submit(
        employer=policy.employer,
        policy=policy,
        draft=draft_from_request(body),
        partner_id=policy.employer.partner_id,
        actor=SYSTEM,
    )


@pytest.fixture
def policy(time_machine):
    time_machine.move_to(timezone.make_aware(timezone.datetime(2026, 6, 1, 10, 0)), tick=False)
    return PolicyFactory()


@pytest.mark.django_db
def test_submit_writes_received_history_audit_and_one_outbox_event(policy):
    e = submit(policy, addition(policy, "E-1", effective=date(2026, 6, 1)))

    assert e.status == S.RECEIVED
    assert list(e.history.values_list("to_status", flat=True)) == ["RECEIVED"]
    event = OutboxMessage.objects.get(topic="endorsements.process")
    assert (event.payload, event.key) == ({"ids": [e.pk]}, f"member:{policy.pk}:E-1")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body_changes", "field"),
    [
        ({"effective_date": "2026-03-01"}, "effective_date"),  # before today − 30 days
        ({"effective_date": "2027-04-01"}, "effective_date"),  # after the policy ends
    ],
)
def test_context_errors_are_422_and_change_nothing(policy, body_changes, field):
    with pytest.raises(DomainValidationError) as exc:
        submit(policy, {**addition(policy, "E-1", effective=date(2026, 6, 1)), **body_changes})

    assert set(exc.value.errors) == {field}
    assert Endorsement.objects.count() == 0
    assert OutboxMessage.objects.count() == 0


@pytest.mark.django_db
def test_suspended_employer_accepts_nothing(policy):
    policy.employer.status = "suspended"
    policy.employer.save()

    with pytest.raises(DomainValidationError) as exc:
        submit(policy, addition(policy, "E-1", effective=date(2026, 6, 1)))

    assert "employer" in exc.value.errors


@pytest.mark.django_db
def test_member_already_being_added_cannot_be_added_again_but_can_be_deleted(policy):
    submit(policy, addition(policy, "E-1", effective=date(2026, 6, 1)))

    with pytest.raises(DomainValidationError) as exc:
        submit(policy, addition(policy, "E-1", effective=date(2026, 6, 2)))
    assert "employee.employee_code" in exc.value.errors
    assert submit(policy, deletion(policy, "E-1", effective=date(2026, 7, 1))).status == S.RECEIVED


@pytest.mark.django_db
def test_deletion_of_an_unknown_member_is_422(policy):
    with pytest.raises(DomainValidationError) as exc:
        submit(policy, deletion(policy, "NOPE", effective=date(2026, 6, 1)))

    assert exc.value.errors == {"employee_code": ["The member is not covered on this policy."]}


@pytest.mark.django_db
@pytest.mark.parametrize("status", sorted(set(S) - {S.FAILED, S.REJECTED, S.CANCELLED}))
def test_same_content_within_24h_is_409_with_the_existing_id(policy, time_machine, status):
    first = submit(policy, addition(policy, "E-1", effective=date(2026, 6, 1)))
    Endorsement.objects.filter(pk=first.pk).update(status=status)  # in flight, or finished well

    with pytest.raises(Conflict) as exc:
        submit(policy, addition(policy, "E-1", effective=date(2026, 6, 1)))
    assert exc.value.extra == {"existing_id": first.pk}
    assert Endorsement.objects.count() == 1

    time_machine.shift(timedelta(hours=25))
    Endorsement.objects.filter(pk=first.pk).update(status=S.ACTIVE)  # its member may be added again later
    assert submit(policy, addition(policy, "E-1", effective=date(2026, 6, 1))).pk != first.pk


@pytest.mark.django_db
@pytest.mark.parametrize("status", [S.FAILED, S.REJECTED, S.CANCELLED])
def test_content_that_ended_failed_rejected_or_cancelled_may_be_sent_again(policy, status):
    first = submit(policy, addition(policy, "E-1", effective=date(2026, 6, 1)))
    Endorsement.objects.filter(pk=first.pk).update(status=status)

    again = submit(policy, addition(policy, "E-1", effective=date(2026, 6, 1)))

    assert again.pk != first.pk
    assert again.content_hash == first.content_hash


@pytest.mark.django_db
def test_velocity_breaker_holds_endorsements_past_the_hourly_limit_for_review(policy):
    policy.employer.velocity_limit_per_hour = 3
    policy.employer.save()
    ledger.topup_post(employer_id=policy.employer_id, amount=10_000_000, reference="t", actor=SYSTEM)
    created = [submit(policy, addition(policy, f"V-{i}", effective=date(2026, 6, 1))) for i in range(5)]

    services.endorsements_process(ids=[e.pk for e in created], actor=SYSTEM)

    statuses = [Endorsement.objects.get(pk=e.pk).status for e in created]
    assert statuses == [S.FUNDS_LOCKED] * 3 + [S.ON_HOLD_REVIEW] * 2
    services.endorsement_review_decide(endorsement=created[3], approve=True, reason="known census", actor=SYSTEM)
    services.endorsement_review_decide(endorsement=created[4], approve=False, reason="typo", actor=SYSTEM)
    assert Endorsement.objects.get(pk=created[3].pk).status == S.FUNDS_LOCKED
    assert Endorsement.objects.get(pk=created[4].pk).status == S.REJECTED


@pytest.mark.django_db
def test_a_rejection_while_processing_lets_the_members_next_endorsement_go(policy):
    first = submit(policy, addition(policy, "E-1", effective=date(2026, 6, 1)))
    second = submit(policy, deletion(policy, "E-1", effective=date(2026, 6, 20)))
    policy.employer.status = "suspended"
    policy.employer.save()
    OutboxMessage.objects.all().delete()

    services.endorsements_process(ids=[first.pk, second.pk], actor=SYSTEM)

    assert Endorsement.objects.get(pk=first.pk).status == S.REJECTED
    assert Endorsement.objects.get(pk=second.pk).status == S.RECEIVED  # blocked behind the first, until now
    [wake] = OutboxMessage.objects.filter(topic="endorsements.process")
    assert wake.payload == {"ids": [second.pk]}
    services.endorsements_process(ids=wake.payload["ids"], actor=SYSTEM)
    assert Endorsement.objects.get(pk=second.pk).status == S.REJECTED
    assert Endorsement.objects.get(pk=second.pk).rejection_class == "data_mismatch"


@pytest.mark.django_db
def test_cancel_before_sent_releases_the_hold_and_after_sent_is_409(policy):
    ledger.topup_post(employer_id=policy.employer_id, amount=10_000_000, reference="t", actor=SYSTEM)
    e = submit(policy, addition(policy, "E-1", effective=date(2026, 6, 1)))
    services.endorsements_process(ids=[e.pk], actor=SYSTEM)
    assert balance_get(employer_id=policy.employer_id).held == Endorsement.objects.get(pk=e.pk).premium_amount

    services.endorsement_cancel(endorsement=e, actor=SYSTEM)

    assert Endorsement.objects.get(pk=e.pk).status == S.CANCELLED
    assert balance_get(employer_id=policy.employer_id).held == 0
    other = submit(policy, addition(policy, "E-2", effective=date(2026, 6, 1)))
    Endorsement.objects.filter(pk=other.pk).update(status=S.SENT)
    with pytest.raises(Conflict):
        services.endorsement_cancel(endorsement=other, actor=SYSTEM)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_8_workers_500_debits_funded_for_300_lock_exactly_300_and_park_200_then_topup_wakes_fifo(
    require_postgres, time_machine
):
    time_machine.move_to(timezone.make_aware(timezone.datetime(2026, 6, 1, 10, 0)), tick=True)
    # A premium of exactly ₹1.00 per addition: SI ₹1,000 at 1 per mille over a term that starts today.
    policy = PolicyFactory(
        start_date=date(2026, 6, 1),
        end_date=date(2027, 5, 31),
        premium_rate_per_mille=Decimal(1),
        default_sum_insured=1000_00,
    )
    policy.employer.velocity_limit_per_hour = 10_000
    policy.employer.save()
    ledger.topup_post(employer_id=policy.employer_id, amount=300_00, reference="fund-300", actor=SYSTEM)
    with transaction.atomic():
        ids = [submit(policy, addition(policy, f"H-{i:03d}", effective=date(2026, 6, 1))).pk for i in range(500)]
    assert {e.premium_amount for e in Endorsement.objects.all()} == {100}

    errors: list[BaseException] = []

    def worker(chunk: list[int]) -> None:
        try:
            for pk in chunk:
                services.endorsements_process(ids=[pk], actor=SYSTEM)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(ids[n::8],)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    assert errors == []
    counts = {s: Endorsement.objects.filter(status=s).count() for s in (S.FUNDS_LOCKED, S.ON_HOLD_FUNDS)}
    assert counts == {S.FUNDS_LOCKED: 300, S.ON_HOLD_FUNDS: 200}
    balance = balance_get(employer_id=policy.employer_id)
    assert (balance.held, balance.available) == (300_00, 0)

    parked_fifo = list(Endorsement.objects.filter(status=S.ON_HOLD_FUNDS).order_by("id").values_list("pk", flat=True))
    ledger.topup_post(employer_id=policy.employer_id, amount=50_00, reference="fund-50", actor=SYSTEM)
    services.endorsements_wake_parked(employer_id=policy.employer_id, actor=SYSTEM)

    still_parked = list(Endorsement.objects.filter(status=S.ON_HOLD_FUNDS).order_by("id").values_list("pk", flat=True))
    assert still_parked == parked_fifo[50:]  # the 50 that fit were the oldest parked (FIFO)
    assert Endorsement.objects.filter(status=S.FUNDS_LOCKED).count() == 350
    assert not Employee.objects.exists()  # nothing is covered before the insurer confirms


@pytest.mark.django_db
def test_large_batch_checks_members_and_duplicates_without_in_lists(policy):
    """Over LARGE_IN_LIST rows, the projection and duplicate checks filter in Python: same answers."""
    from apps.employers.models import Coverage
    from apps.employers.services import coverage_start, employee_upsert
    from apps.endorsements.validation import LARGE_IN_LIST

    employee, _ = employee_upsert(
        employer_id=policy.employer_id,
        employee_code="COVERED",
        details={"first_name": "A", "last_name": "B", "date_of_birth": date(1990, 1, 1), "gender": "male", "email": ""},
    )
    coverage_start(
        employee=employee,
        policy=policy,
        sum_insured=100_000_00,
        start_date=date(2026, 5, 1),
        endorsement_id=None,
        actor=SYSTEM,
    )
    earlier = submit(policy, addition(policy, "DUP", effective=date(2026, 6, 1)))
    bodies = [addition(policy, f"L-{i}", effective=date(2026, 6, 1)) for i in range(LARGE_IN_LIST + 200)]
    bodies += [
        addition(policy, "COVERED", effective=date(2026, 6, 1)),
        addition(policy, "DUP", effective=date(2026, 6, 1)),
    ]
    drafts = [draft_from_request(b) for b in bodies]

    batch = services.endorsement_batch_create(
        employer=policy.employer,
        policy=policy,
        drafts=drafts,
        parse_errors=[],
        source="json",
        partner_id=policy.employer.partner_id,
        actor=SYSTEM,
    )

    assert (batch.total_rows, batch.accepted, batch.rejected) == (LARGE_IN_LIST + 202, LARGE_IN_LIST + 200, 2)
    assert [(e["row"], e["field"]) for e in batch.errors] == [
        (LARGE_IN_LIST + 201, "employee.employee_code"),  # a JSON row's errors carry their path in the row
        (LARGE_IN_LIST + 202, "row"),
    ]
    assert str(earlier.pk) in batch.errors[1]["detail"]
    assert Endorsement.objects.filter(batch=batch).count() == LARGE_IN_LIST + 200
    assert Coverage.objects.count() == 1
