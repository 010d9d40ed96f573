"""Issue 8, kind 11: insurer results that contradict a state Keel already decided.

Every (insurer outcome, endorsement status) pair is generated from the code (`contradicts` over every
`EndorsementStatus`): the contradicting ones answer 409 with the current state through the signed callback,
overwrite nothing and are recorded once as an `InsurerConflict` + audit event; the same pairs arriving as a
synchronous gateway answer (`results_apply`, and `insurer_submit` over real HTTP) are recorded too. Operators
resolve them through services: accept the insurer's result (hold and capture again / apply the rejection)
or ask the insurer to reverse — each audited, refusals change nothing.
"""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent
from apps.common.actors import Actor
from apps.common.errors import Conflict
from apps.employers.selectors import coverage_active
from apps.endorsements import services
from apps.endorsements.conflicts import decided_state
from apps.endorsements.dispatch import submissions_for
from apps.endorsements.models import Endorsement, EndorsementHistory, EndorsementStatus
from apps.endorsements.parsing import draft_from_request
from apps.endorsements.tests.factories import PolicyFactory, addition
from apps.insurers.callback_secrets import callback_secret_seal
from apps.insurers.conflicts import contradicts, insurer_conflict_accept, insurer_conflict_request_reversal
from apps.insurers.contracts import EndorsementSubmission, MemberData
from apps.insurers.models import CallbackEvent, ConflictStatus, InsurerConflict, InsurerSubmission, SubmissionState
from apps.insurers.sandbox.callbacks import sign_headers
from apps.insurers.sandbox.setup import generate_callback_secret, sandbox_register
from apps.insurers.services import insurer_submit
from apps.ledger import services as ledger
from apps.ledger.selectors import balance_get
from apps.outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db
S = EndorsementStatus
SYSTEM = Actor.system("tests")
OPERATOR = Actor.operator(user_id=None, username="ops", ip=None)
TODAY = date(2026, 6, 1)
SECRET = generate_callback_secret()  # the plaintext both sides know; the insurer row stores it sealed

PAIRS = [(outcome, status) for outcome in ("confirmed", "rejected") for status in S.values]
CONTRADICTIONS = [(o, s) for o, s in PAIRS if contradicts(o, decided_state(s))]
AGREEING = [(o, s) for o, s in PAIRS if (o, s) not in CONTRADICTIONS]
# What the submission log says when Keel reached each state (the insurer's earlier answer, if any).
LOG_FOR = {S.CONFIRMED: "confirmed", S.ACTIVE: "confirmed", S.REJECTED: "rejected", S.FAILED: "transient_error"}


def test_the_table_is_the_issue_s_contradictions() -> None:
    assert sorted(CONTRADICTIONS) == [
        ("confirmed", "CANCELLED"),
        ("confirmed", "FAILED"),
        ("confirmed", "REJECTED"),
        ("rejected", "ACTIVE"),
        ("rejected", "CONFIRMED"),
    ]


@pytest.fixture
def policy(time_machine):
    time_machine.move_to(timezone.make_aware(timezone.datetime(2026, 6, 1, 10, 0)), tick=False)
    policy = PolicyFactory()
    policy.insurer.callback_secret = callback_secret_seal(SECRET, insurer_code=policy.insurer.code)
    policy.insurer.save(update_fields=["callback_secret"])
    return policy


def endorsement_in(
    policy, status: str, *, code: str = "E-1", effective: date = TODAY, dob: str = "1990-05-17"
) -> Endorsement:
    """An endorsement Keel sent to the insurer and then decided `status` (set directly: the state is the input)."""
    e = services.endorsement_submit(
        employer=policy.employer,
        policy=policy,
        draft=draft_from_request(addition(policy, code, effective=effective, dob=dob)),
        partner_id=policy.employer.partner_id,
        actor=SYSTEM,
    )
    Endorsement.objects.filter(pk=e.pk).update(status=status, insurer_reference="INS-ORIG" if status in LOG_FOR else "")
    now = timezone.now()
    InsurerSubmission.objects.create(
        insurer=policy.insurer,
        endorsement_id=e.pk,
        idempotency_key=e.idempotency_key,
        kind="addition",
        first_sent_at=now,
        sent_at=now,
        attempts=1,
        last_outcome=LOG_FOR.get(status, "pending"),
        insurer_reference="INS-ORIG" if LOG_FOR.get(status) == "confirmed" else "",
    )
    e.refresh_from_db()
    return e


def callback(policy, events: list[dict], msg_id: str = "msg_1"):
    raw = json.dumps({"events": events})
    signed = sign_headers(secret=SECRET, msg_id=msg_id, body=raw)
    signed.pop("Content-Type")
    extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in signed.items()}
    return APIClient().post(
        f"/api/v1/insurer-callbacks/{policy.insurer.code}", data=raw, content_type="application/json", **extra
    )


def event(e: Endorsement, outcome: str) -> dict:
    data = {"idempotency_key": e.idempotency_key, "insurer_reference": "INS-NEW"}
    if outcome == "rejected":
        data["reason"] = "Member already exists"
    return {"type": f"endorsement.{outcome}", "data": data}


def snapshot(e: Endorsement) -> tuple:
    e.refresh_from_db()
    sub = InsurerSubmission.objects.get(endorsement_id=e.pk)
    return (
        e.status,
        e.insurer_reference,
        e.rejection_reason,
        e.updated_at,
        EndorsementHistory.objects.filter(endorsement_id=e.pk).count(),
        sub.last_outcome,
        sub.insurer_reference,
        sub.rejection_class,
        sub.rejection_reason,
        sub.responded_at,
    )


def result_events() -> int:
    return OutboxMessage.objects.filter(topic="insurer.result_received").count()


@pytest.mark.parametrize(("outcome", "status"), CONTRADICTIONS)
def test_contradicting_callback_is_409_with_the_state_overwrites_nothing_and_is_recorded(policy, outcome, status):
    e = endorsement_in(policy, status)
    before = snapshot(e)
    other = endorsement_in(policy, S.SENT, code="E-2")

    response = callback(policy, [event(e, outcome), event(other, "confirmed")])

    assert response.status_code == 200
    conflict = InsurerConflict.objects.get()
    assert response.json()["results"] == [
        {
            "index": 0,
            "status": 409,
            "detail": f"The endorsement is {status}: this {outcome} result contradicts it and was not applied. "
            f"Recorded as insurer conflict {conflict.pk} for an operator.",
            "endorsement_status": status,
            "conflict_id": conflict.pk,
        },
        {"index": 1, "status": 200, "detail": "Endorsement confirmed."},
    ]
    assert snapshot(e) == before
    assert [m.payload["endorsement_id"] for m in OutboxMessage.objects.filter(topic="insurer.result_received")] == [
        other.pk
    ]
    assert (
        conflict.endorsement_id,
        conflict.insurer_id,
        conflict.insurer_outcome,
        conflict.keel_status,
        conflict.source,
        conflict.status,
        conflict.insurer_reference,
        conflict.occurrences,
    ) == (e.pk, policy.insurer_id, outcome, status, "callback", "open", "INS-NEW", 1)
    audit = AuditEvent.objects.get(action="insurer.result_conflict_recorded")
    assert (audit.object_id, audit.before, audit.after["conflict_id"]) == (str(e.pk), {"status": status}, conflict.pk)
    assert CallbackEvent.objects.get(submission__endorsement_id=e.pk).published is False


@pytest.mark.parametrize(("outcome", "status"), CONTRADICTIONS[:2])
def test_redelivered_contradiction_is_409_again_and_one_conflict(policy, outcome, status):
    e = endorsement_in(policy, status)
    first = callback(policy, [event(e, outcome)], msg_id="msg_a")
    again = callback(policy, [event(e, outcome)], msg_id="msg_a")
    other_id = callback(policy, [event(e, outcome)], msg_id="msg_b")

    assert [r.json()["results"][0]["status"] for r in (first, again, other_id)] == [409, 409, 409]
    assert InsurerConflict.objects.get().occurrences == 3
    assert AuditEvent.objects.filter(action="insurer.result_conflict_recorded").count() == 1
    assert result_events() == 0


@pytest.mark.parametrize(("outcome", "status"), AGREEING)
def test_results_that_agree_or_arrive_in_flight_are_no_conflict(policy, outcome, status):
    e = endorsement_in(policy, status)

    response = callback(policy, [event(e, outcome)])

    assert response.json()["results"][0]["status"] == 200
    assert not InsurerConflict.objects.exists()


@pytest.mark.parametrize(("outcome", "status"), CONTRADICTIONS)
def test_contradicting_result_reaching_results_apply_is_recorded_and_changes_nothing(policy, outcome, status):
    # The callback saw the endorsement SENT and published the result; by the time the endorsements app applies
    # it under its row lock, Keel has decided otherwise (e.g. FAILED after the retry budget).
    e = endorsement_in(policy, status)
    before = snapshot(e)

    transitions = services.results_apply(
        outcomes=[services.InsurerOutcome(e.pk, outcome, "INS-LATE", "duplicate_member", "late")], actor=SYSTEM
    )

    assert transitions == []
    assert snapshot(e) == before
    conflict = InsurerConflict.objects.get()
    assert (conflict.endorsement_id, conflict.insurer_outcome, conflict.keel_status, conflict.source) == (
        e.pk,
        outcome,
        status,
        "gateway",
    )
    assert conflict.submission_id == InsurerSubmission.objects.get(endorsement_id=e.pk).pk


@pytest.mark.django_db(transaction=True)
def test_synchronous_gateway_answer_contradicting_a_decided_state_is_recorded_not_logged_over(live_server):
    # The sandbox confirms synchronously over real HTTP; Keel had already FAILED the endorsement.
    [insurer] = sandbox_register(base_url=live_server.url)
    today = timezone.localdate()
    policy = PolicyFactory(insurer=insurer, start_date=today - timedelta(days=30), end_date=today + timedelta(days=300))
    e = endorsement_in(policy, S.FAILED, effective=today)
    assert submissions_for(ids=[e.pk]) == []  # the pipeline sends only SENT ones; an in-flight answer by hand:
    sent = EndorsementSubmission(
        endorsement_id=e.pk,
        idempotency_key=e.idempotency_key,
        kind="addition",
        policy_number=policy.policy_number,
        effective_date=e.effective_date,
        member=MemberData("E-1", "Asha", "Rao", date(1990, 5, 17), "female", "asha@example.com"),
        sum_insured=e.sum_insured or 0,
        premium_amount=e.premium_amount,
        premium_direction="debit",
    )

    [result] = insurer_submit(insurer_code=insurer.code, submissions=[sent])

    assert result.outcome == "confirmed"
    row = InsurerSubmission.objects.get(endorsement_id=e.pk)
    assert row.last_outcome == SubmissionState.SENT  # marked sent by this attempt, the answer not logged over
    conflict = InsurerConflict.objects.get()
    assert (conflict.source, conflict.insurer_outcome, conflict.keel_status) == ("gateway", "confirmed", "FAILED")


# --- operator actions ----------------------------------------------------------------------------------------


def fund(policy, paise: int) -> None:
    ledger.topup_post(employer_id=policy.employer_id, amount=paise, reference=f"t-{paise}", actor=SYSTEM)


def conflict_for(policy, e: Endorsement, outcome: str) -> InsurerConflict:
    response = callback(policy, [event(e, outcome)])
    assert response.json()["results"][0]["status"] == 409
    return InsurerConflict.objects.get(endorsement_id=e.pk)


def test_accepting_a_confirmation_after_failed_holds_and_captures_again_and_starts_cover(policy):
    fund(policy, 10_000_00)
    e = endorsement_in(policy, S.FAILED)
    conflict = conflict_for(policy, e, "confirmed")
    before = balance_get(employer_id=policy.employer_id)

    insurer_conflict_accept(conflict_id=conflict.pk, actor=OPERATOR)

    e.refresh_from_db()
    conflict.refresh_from_db()
    after = balance_get(employer_id=policy.employer_id)
    assert (e.status, e.insurer_reference, e.funding_generation) == (S.ACTIVE, "INS-NEW", 1)
    assert (after.available, after.held) == (before.available - e.premium_amount, 0)
    assert coverage_active(policy_id=policy.pk, employee_code="E-1") is not None
    assert (conflict.status, conflict.resolved_by) == (ConflictStatus.RESOLVED, OPERATOR.display)
    assert conflict.resolution_note == (
        f"accepted the insurer's result: endorsement {e.pk} FAILED → ACTIVE, "
        f"premium of {e.premium_amount} paise held again and captured."
    )
    assert InsurerSubmission.objects.get(endorsement_id=e.pk).last_outcome == "confirmed"
    assert AuditEvent.objects.filter(action="insurer.result_conflict_accepted", object_id=str(conflict.pk)).exists()
    assert list(
        EndorsementHistory.objects.filter(endorsement_id=e.pk).order_by("id").values_list("to_status", flat=True)
    )[-2:] == [S.CONFIRMED, S.ACTIVE]


def test_accepting_without_funds_to_hold_again_is_refused_and_changes_nothing(policy):
    e = endorsement_in(policy, S.CANCELLED)
    conflict = conflict_for(policy, e, "confirmed")
    audits = AuditEvent.objects.count()

    with pytest.raises(Conflict) as refused:
        insurer_conflict_accept(conflict_id=conflict.pk, actor=OPERATOR)

    assert "cannot hold the premium again" in str(refused.value.detail)
    e.refresh_from_db()
    conflict.refresh_from_db()
    assert (e.status, e.funding_generation, conflict.status) == (S.CANCELLED, 0, ConflictStatus.OPEN)
    assert balance_get(employer_id=policy.employer_id).held == 0
    assert AuditEvent.objects.count() == audits


def test_accepting_a_confirmation_is_refused_when_a_later_endorsement_for_the_member_exists(policy):
    fund(policy, 10_000_00)
    e = endorsement_in(policy, S.FAILED)
    later = endorsement_in(policy, S.ACTIVE, code="E-1", dob="1991-01-01")  # the partner resubmitted
    conflict = conflict_for(policy, e, "confirmed")

    with pytest.raises(Conflict) as refused:
        insurer_conflict_accept(conflict_id=conflict.pk, actor=OPERATOR)

    assert f"Endorsement {later.pk} for the same member came later" in str(refused.value.detail)
    e.refresh_from_db()
    assert e.status == S.FAILED


def test_accepting_a_rejection_of_a_confirmed_endorsement_rejects_it_and_releases_the_hold(policy):
    fund(policy, 10_000_00)
    e = endorsement_in(policy, S.FUNDS_LOCKED, effective=TODAY + timedelta(days=10))
    [held] = ledger.holds_place_bulk(
        employer_id=policy.employer_id,
        requests=[ledger.HoldRequest(reference=e.hold_reference, amount=e.premium_amount, endorsement_id=e.pk)],
        actor=SYSTEM,
    )
    assert held.placed
    Endorsement.objects.filter(pk=e.pk).update(status=S.CONFIRMED)
    InsurerSubmission.objects.filter(endorsement_id=e.pk).update(last_outcome="confirmed")
    conflict = conflict_for(policy, e, "rejected")

    insurer_conflict_accept(conflict_id=conflict.pk, actor=OPERATOR)

    e.refresh_from_db()
    assert (e.status, e.rejection_class, e.rejection_reason) == (
        S.REJECTED,
        "duplicate_member",
        "Member already exists",
    )
    assert balance_get(employer_id=policy.employer_id).held == 0
    assert InsurerSubmission.objects.get(endorsement_id=e.pk).last_outcome == "rejected"


def test_accepting_a_rejection_of_cover_in_force_is_refused(policy):
    e = endorsement_in(policy, S.ACTIVE)
    conflict = conflict_for(policy, e, "rejected")

    with pytest.raises(Conflict) as refused:
        insurer_conflict_accept(conflict_id=conflict.pk, actor=OPERATOR)

    assert "cover in force" in str(refused.value.detail)
    conflict.refresh_from_db()
    assert conflict.status == ConflictStatus.OPEN


def test_asking_the_insurer_to_reverse_keeps_keel_s_decision_and_is_audited(policy):
    e = endorsement_in(policy, S.FAILED)
    conflict = conflict_for(policy, e, "confirmed")
    before = snapshot(e)

    insurer_conflict_request_reversal(conflict_id=conflict.pk, actor=OPERATOR, note="mailed ops@insurer, ticket 42")

    conflict.refresh_from_db()
    assert (conflict.status, conflict.resolution_note) == (
        ConflictStatus.REVERSAL_REQUESTED,
        "mailed ops@insurer, ticket 42",
    )
    assert snapshot(e) == before
    assert AuditEvent.objects.filter(action="insurer.result_conflict_reversal_requested").count() == 1
    with pytest.raises(Conflict):
        insurer_conflict_request_reversal(conflict_id=conflict.pk, actor=OPERATOR)
    # A redelivery of the insurer's confirmation counts on the same conflict
    assert callback(policy, [event(e, "confirmed")], msg_id="msg_z").json()["results"][0]["status"] == 409
    assert InsurerConflict.objects.get().occurrences == 2


def test_admin_lists_conflicts_and_its_actions_go_through_the_services(policy, admin_client):
    fund(policy, 10_000_00)
    failed = endorsement_in(policy, S.FAILED)
    active = endorsement_in(policy, S.ACTIVE, code="E-2")
    accept = conflict_for(policy, failed, "confirmed")
    reverse = conflict_for(policy, active, "rejected")
    url = "/admin/insurers/insurerconflict/"

    listing = admin_client.get(url, {"status__exact": "open"})
    accepted = admin_client.post(url, {"action": "accept_insurer_result", "_selected_action": [accept.pk]}, follow=True)
    reversed_ = admin_client.post(url, {"action": "request_reversal", "_selected_action": [reverse.pk]}, follow=True)

    assert listing.status_code == 200
    rows = listing.content.decode()
    assert f">{accept.pk}<" in rows
    assert f">{reverse.pk}<" in rows
    assert (accepted.status_code, reversed_.status_code) == (200, 200)
    accept.refresh_from_db()
    reverse.refresh_from_db()
    failed.refresh_from_db()
    assert (accept.status, failed.status) == (ConflictStatus.RESOLVED, S.ACTIVE)
    assert reverse.status == ConflictStatus.REVERSAL_REQUESTED
    assert accept.resolved_by == reverse.resolved_by == "user:admin"
