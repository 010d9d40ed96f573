"""Listing runs, reading one discrepancy, money as decimal strings, and the note `ignore` needs (issue 12)."""

from __future__ import annotations

import pytest

from apps.audit.models import AuditEvent
from apps.employers.tests.factories import EmployerFactory
from apps.endorsements.tests.factories import PolicyFactory
from apps.reconciliation.models import Discrepancy, ReconciliationRun
from apps.reconciliation.services import reconciliation_finish

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(make_key):
    policy = PolicyFactory()
    other = PolicyFactory(insurer=policy.insurer)
    own = make_key(partner=policy.employer.partner, employers=[policy.employer])
    foreign = make_key(partner=other.employer.partner, employers=[other.employer])
    return policy, other, own, foreign


def _discrepancy(run_id: int, policy, **fields) -> Discrepancy:
    values = {"employee_code": "E1", "kind": "missing_at_insurer", "severity": "high", "key": "k"}
    values.update(fields)
    return Discrepancy.objects.create(run_id=run_id, employer=policy.employer, policy=policy, **values)


def test_list_shows_only_the_keys_runs_newest_first_with_filters(setup) -> None:
    policy, other, own, foreign = setup
    mine = own.post("/api/v1/reconciliations", {"insurer": policy.insurer.code}).json()["id"]
    reconciliation_finish(run_id=mine, status="COMPLETED")
    again = own.post("/api/v1/reconciliations", {"insurer": policy.insurer.code}).json()["id"]
    theirs = foreign.post("/api/v1/reconciliations", {"insurer": policy.insurer.code}).json()["id"]

    listed = own.get("/api/v1/reconciliations")
    running = own.get("/api/v1/reconciliations?status=RUNNING")
    by_employer = own.get(f"/api/v1/reconciliations?employer={other.employer_id}")
    by_insurer = own.get("/api/v1/reconciliations?insurer=nope")
    bad = own.get("/api/v1/reconciliations?status=SLEEPING")

    assert [r["id"] for r in listed.json()["results"]] == [again, mine]
    assert [r["id"] for r in running.json()["results"]] == [again]
    assert (by_employer.status_code, by_employer.json()["detail"]) == (404, "No employer with this id.")
    assert by_insurer.json()["results"] == []
    assert bad.status_code == 422
    assert [r["id"] for r in foreign.get("/api/v1/reconciliations").json()["results"]] == [theirs]


def test_a_limited_key_does_not_list_a_partner_run_over_employers_it_cannot_see(setup, make_key) -> None:
    policy, _, own, _ = setup
    platform = make_key(partner=policy.employer.partner, all_employers=True)
    PolicyFactory(insurer=policy.insurer, employer=EmployerFactory(partner=policy.employer.partner))
    wide = platform.post("/api/v1/reconciliations", {"insurer": policy.insurer.code}).json()["id"]

    assert own.get("/api/v1/reconciliations").json()["results"] == []
    assert [r["id"] for r in platform.get("/api/v1/reconciliations").json()["results"]] == [wide]


def test_discrepancy_detail_is_tenant_scoped_and_shows_money_in_rupees(setup) -> None:
    policy, _, own, foreign = setup
    run_id = own.post("/api/v1/reconciliations", {"insurer": policy.insurer.code}).json()["id"]
    money = _discrepancy(run_id, policy, kind="amount_mismatch", keel_value=123450, insurer_value=123550, key="c:1")
    si = _discrepancy(
        run_id, policy, kind="field_mismatch", field="sum_insured", keel_value=50000000, insurer_value=30000005, key="f"
    )
    missing = _discrepancy(
        run_id, policy, kind="missing_internally", insurer_value={"employee_code": "E1", "sum_insured": 5}, key="m"
    )
    name = _discrepancy(run_id, policy, kind="field_mismatch", field="first_name", keel_value="A", insurer_value="B")

    shown = {d.pk: own.get(f"/api/v1/discrepancies/{d.pk}").json() for d in (money, si, missing, name)}

    assert (shown[money.pk]["keel_value"], shown[money.pk]["insurer_value"]) == ("1234.50", "1235.50")
    assert (shown[si.pk]["keel_value"], shown[si.pk]["insurer_value"]) == ("500000.00", "300000.05")
    assert (shown[missing.pk]["keel_value"], shown[missing.pk]["insurer_value"]) == (
        None,
        {"employee_code": "E1", "sum_insured": "0.05"},
    )
    assert (shown[name.pk]["keel_value"], shown[name.pk]["insurer_value"]) == ("A", "B")
    assert foreign.get(f"/api/v1/discrepancies/{money.pk}").status_code == 404
    assert own.get("/api/v1/discrepancies/999999").status_code == 404


@pytest.mark.parametrize("note", [None, "", "   "])
def test_ignore_without_a_note_is_422_naming_note_and_changes_nothing(setup, note) -> None:
    policy, _, own, _ = setup
    run_id = own.post("/api/v1/reconciliations", {"insurer": policy.insurer.code}).json()["id"]
    discrepancy = _discrepancy(run_id, policy)
    body = {"action": "ignore"} if note is None else {"action": "ignore", "note": note}

    response = own.post(f"/api/v1/discrepancies/{discrepancy.pk}/resolve", body)

    assert response.status_code == 422
    assert [e["pointer"] for e in response.json()["errors"]] == ["/note"]
    discrepancy.refresh_from_db()
    assert (discrepancy.status, discrepancy.resolution_note) == ("open", "")
    assert not AuditEvent.objects.filter(action="reconciliation.discrepancy_resolved").exists()


def test_every_action_keeps_its_note(setup) -> None:
    policy, _, own, _ = setup
    run_id = own.post("/api/v1/reconciliations", {"insurer": policy.insurer.code}).json()["id"]
    ignored = _discrepancy(run_id, policy, key="a")
    flagged = _discrepancy(run_id, policy, kind="charge_missing", key="b", keel_value=100)

    first = own.post(f"/api/v1/discrepancies/{ignored.pk}/resolve", {"action": "ignore", "note": " known gap "})
    second = own.post(f"/api/v1/discrepancies/{flagged.pk}/resolve", {"action": "flag_for_finance", "note": "check"})

    assert (first.status_code, first.json()["status"], first.json()["resolution_note"]) == (200, "ignored", "known gap")
    assert (second.status_code, second.json()["resolution_note"]) == (200, "check")
    assert ReconciliationRun.objects.count() == 1


def test_resolving_again_with_the_same_action_replays_and_with_another_is_409_changing_nothing(setup) -> None:
    policy, _, own, _ = setup
    run_id = own.post("/api/v1/reconciliations", {"insurer": policy.insurer.code}).json()["id"]
    d = _discrepancy(run_id, policy, key="a")
    first = own.post(f"/api/v1/discrepancies/{d.pk}/resolve", {"action": "ignore", "note": "known gap"})
    audits = AuditEvent.objects.count()

    again = own.post(f"/api/v1/discrepancies/{d.pk}/resolve", {"action": "ignore", "note": "other words"})
    other = own.post(f"/api/v1/discrepancies/{d.pk}/resolve", {"action": "resend", "note": "x"})

    assert (first.status_code, again.status_code, again.json()) == (200, 200, first.json())
    assert other.status_code == 409
    body = other.json()
    assert (body["type"].rsplit("/", 1)[-1], body["status"], body["discrepancy_status"], body["resolution_action"]) == (
        "discrepancy-already-resolved",
        409,
        "ignored",
        "ignore",
    )
    d.refresh_from_db()
    assert (d.status, d.resolution_action, d.resolution_note, AuditEvent.objects.count()) == (
        "ignored",
        "ignore",
        "known gap",
        audits,
    )


def test_an_operators_run_over_the_keys_employers_is_listed_as_it_can_be_opened_and_filters_by_employer(
    setup, make_key
) -> None:
    """Newcomer trial: runs of `manage.py reconcile` (and the nightly run) could be opened by id but were missing
    from the list; `?employer=` left out all-employers runs covering the employer."""
    from apps.common.actors import Actor
    from apps.reconciliation.services import reconciliation_start

    policy, other, own, foreign = setup
    platform = make_key(partner=policy.employer.partner, all_employers=True)

    def operators_run(employer_ids: list[int]) -> int:
        kwargs = {"employer_id": None, "policy_id": None, "partner_id": None, "actor": Actor.system("tests")}
        return reconciliation_start(insurer_id=policy.insurer_id, employer_ids=employer_ids, queue=False, **kwargs).pk

    operator = operators_run([policy.employer_id])
    reconciliation_finish(run_id=operator, status="COMPLETED")
    across = operators_run([policy.employer_id, other.employer_id])

    for key in (own, platform):
        listed = [r["id"] for r in key.get("/api/v1/reconciliations").json()["results"]]
        by_employer = key.get(f"/api/v1/reconciliations?employer={policy.employer_id}").json()["results"]
        assert listed == [r["id"] for r in by_employer] == [operator]
        assert key.get(f"/api/v1/reconciliations/{operator}").status_code == 200
        assert key.get(f"/api/v1/reconciliations/{across}").status_code == 404
    assert foreign.get("/api/v1/reconciliations").json()["results"] == []


def test_resolve_honours_idempotency_key(setup) -> None:
    """A `create_*` resolution creates an endorsement: resolve is a creating POST (SPEC §2; newcomer trial)."""
    policy, _, own, _ = setup
    run_id = own.post("/api/v1/reconciliations", {"insurer": policy.insurer.code}).json()["id"]
    d = _discrepancy(run_id, policy, key="a")
    path = f"/api/v1/discrepancies/{d.pk}/resolve"

    first = own.post(path, {"action": "ignore", "note": "known"}, HTTP_IDEMPOTENCY_KEY="resolve-once")
    again = own.post(path, {"action": "ignore", "note": "known"}, HTTP_IDEMPOTENCY_KEY="resolve-once")
    reused = own.post(path, {"action": "resend", "note": "x"}, HTTP_IDEMPOTENCY_KEY="resolve-once")

    assert (first.status_code, again.status_code, again["Idempotent-Replayed"]) == (200, 200, "true")
    assert again.json() == first.json()
    assert reused.status_code == 422
    d.refresh_from_db()
    assert (d.status, d.resolution_action) == ("ignored", "ignore")
