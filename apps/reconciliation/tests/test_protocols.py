"""Reconciliation of SOAP and file insurers against the sandbox (issue 12, ADR 0045): the SOAP face over real
HTTP (`GetRoster` / `GetStatement` of the v1 WSDL), the file face through real folders (request file, roster
JSONL + manifest, checksum and row count verified)."""

from __future__ import annotations

import json
from datetime import date

import pytest

from apps.endorsements.tests.factories import PolicyFactory
from apps.insurers.sandbox.roster import (
    sandbox_roster_change,
    sandbox_roster_control,
    sandbox_roster_drop,
    sandbox_roster_load,
)
from apps.insurers.sandbox.roster_files import sandbox_roster_requests_answer
from apps.insurers.sandbox.setup import sandbox_register
from apps.reconciliation.models import Discrepancy, InsurerRosterEntry, ReconciliationRun, RunStatus
from apps.reconciliation.runner import reconciliation_execute
from apps.reconciliation.tests.conftest import WorkerKilled, member

pytestmark = pytest.mark.django_db(transaction=True)

SOAP, FILE = "sandbox-soap", "sandbox-file"


@pytest.fixture
def insurers(live_server, tmp_path):
    rest, soap, file = sandbox_register(
        base_url=live_server.url, codes=("sandbox-rest", SOAP, FILE), file_root=str(tmp_path / "insurers")
    )
    return {"rest": rest, "soap": soap, "file": file, "root": tmp_path / "insurers"}


def _policy(covered_policy, insurer, count: int):
    policy = covered_policy(count, at_insurer=False, policy=PolicyFactory(insurer=insurer))
    sandbox_roster_load(
        code=insurer.code, policy_number=policy.policy_number, members=[member(f"E{n:05d}") for n in range(count)]
    )
    return policy


def _drift(code: str, number: str) -> None:
    sandbox_roster_drop(code=code, policy_number=number, employee_code="E00001")
    sandbox_roster_change(code=code, policy_number=number, employee_code="E00002", date_of_birth=date(1980, 1, 1))
    sandbox_roster_load(code=code, policy_number=number, members=[member("X99999")])


def _kinds(run: ReconciliationRun) -> list[tuple[str, str, str]]:
    return sorted(Discrepancy.objects.filter(run=run).values_list("kind", "employee_code", "field"))


DRIFT_FOUND = [
    ("field_mismatch", "E00002", "date_of_birth"),
    ("missing_at_insurer", "E00001", ""),
    ("missing_internally", "X99999", ""),
]


def test_soap_clean_roster_matches_all_and_percent_moves_with_pages(
    insurers, covered_policy, start_run, fake_clock
) -> None:
    policy = _policy(covered_policy, insurers["soap"], 10)
    run = start_run(policy)
    percents: list[int] = []

    done = reconciliation_execute(
        run_id=run.pk,
        page_size=3,
        sleep=fake_clock,
        on_page=lambda number, seen: percents.append(ReconciliationRun.objects.get(pk=run.pk).percent),
    )

    assert done.status == RunStatus.COMPLETED, done.error
    assert (done.pages_pulled, done.rows_pulled, done.rows_matched, done.rows_expected) == (4, 10, 10, 10)
    assert percents == [28, 57, 85, 95]  # 95 × pulled / expected (the SOAP total), then 100 when completed
    assert done.percent == 100
    assert Discrepancy.objects.count() == 0


def test_soap_each_drift_produces_exactly_its_discrepancy(insurers, covered_policy, start_run, fake_clock) -> None:
    policy = _policy(covered_policy, insurers["soap"], 5)
    _drift(SOAP, policy.policy_number)
    run = start_run(policy)

    done = reconciliation_execute(run_id=run.pk, page_size=2, sleep=fake_clock)

    assert done.status == RunStatus.COMPLETED, done.error
    assert _kinds(done) == DRIFT_FOUND
    assert done.summary["matched"] == 3


def test_soap_429_every_third_page_completes_and_waits_what_was_asked(
    insurers, covered_policy, start_run, fake_clock
) -> None:
    policy = _policy(covered_policy, insurers["soap"], 12)
    sandbox_roster_control(code=SOAP, throttle_every=3, retry_after_seconds=4)
    run = start_run(policy)

    done = reconciliation_execute(run_id=run.pk, page_size=2, sleep=fake_clock)

    assert done.status == RunStatus.COMPLETED, done.error
    assert (done.pages_pulled, done.rows_pulled, done.rows_matched) == (6, 12, 12)
    # Pages 3 and 6 throttled once each (Retry-After: 4), each wait taken in 1 s slices (a cancel is seen).
    assert fake_clock.waits == [1.0] * 8


def _answering_clock(code: str, waits: list[float]):
    """A clock whose every wait lets the sandbox file insurer answer waiting roster requests."""

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        sandbox_roster_requests_answer(code=code)

    return sleep


def test_file_roster_is_requested_verified_and_matched(insurers, covered_policy, start_run) -> None:
    policy = _policy(covered_policy, insurers["file"], 7)
    _drift(FILE, policy.policy_number)
    run = start_run(policy)
    waits: list[float] = []

    done = reconciliation_execute(run_id=run.pk, page_size=3, sleep=_answering_clock(FILE, waits))

    assert done.status == RunStatus.COMPLETED, done.error
    assert _kinds(done) == DRIFT_FOUND
    assert (done.pages_pulled, done.rows_pulled, done.rows_expected) == (3, 7, 7)
    assert waits == [1.0] * 5  # one 5 s poll, in 1 s slices: the request was answered during the first wait
    inbound = insurers["root"] / FILE / "inbound"
    assert sorted(p.name for p in (inbound / "imported").iterdir()) == [
        f"roster-run{run.pk}-policy{policy.pk}.jsonl",
        f"roster-run{run.pk}-policy{policy.pk}.roster-manifest.json",
        f"statement-run{run.pk}-policy{policy.pk}.jsonl",
        f"statement-run{run.pk}-policy{policy.pk}.statement-manifest.json",
    ]
    assert (
        insurers["root"] / FILE / "outbound" / "processed" / f"run{run.pk}-policy{policy.pk}.roster-request.json"
    ).exists()


def test_file_roster_not_matching_its_manifest_is_quarantined_and_the_run_fails(
    insurers, covered_policy, start_run
) -> None:
    policy = _policy(covered_policy, insurers["file"], 3)
    run = start_run(policy)
    inbound = insurers["root"] / FILE / "inbound"

    def answer_then_tamper(seconds: float) -> None:
        sandbox_roster_requests_answer(code=FILE)
        data = inbound / f"roster-run{run.pk}-policy{policy.pk}.jsonl"
        data.write_bytes(data.read_bytes().replace(b'"Asha"', b'"Ashb"'))

    done = reconciliation_execute(run_id=run.pk, page_size=3, sleep=answer_then_tamper)

    assert done.status == RunStatus.FAILED
    assert done.error.startswith(f"roster file roster-run{run.pk}-policy{policy.pk}.jsonl quarantined: sha256 ")
    assert len(list((inbound / "quarantine").iterdir())) == 2
    assert (done.pages_pulled, done.rows_pulled) == (0, 0)
    assert InsurerRosterEntry.objects.count() == 0


def test_file_roster_row_count_mismatch_is_quarantined(insurers, covered_policy, start_run) -> None:
    policy = _policy(covered_policy, insurers["file"], 3)
    run = start_run(policy)
    inbound = insurers["root"] / FILE / "inbound"

    def answer_then_lie(seconds: float) -> None:
        sandbox_roster_requests_answer(code=FILE)
        manifest = inbound / f"roster-run{run.pk}-policy{policy.pk}.roster-manifest.json"
        body = json.loads(manifest.read_bytes())
        manifest.write_text(json.dumps({**body, "row_count": 4}))

    done = reconciliation_execute(run_id=run.pk, page_size=3, sleep=answer_then_lie)

    assert done.status == RunStatus.FAILED
    assert done.error.endswith("quarantined: 3 rows, the manifest says 4")


def test_file_run_resumed_after_a_killed_worker_never_double_counts(insurers, covered_policy, start_run) -> None:
    policy = _policy(covered_policy, insurers["file"], 7)
    run = start_run(policy)
    waits: list[float] = []

    def die_after_first_page(number: str, seen: int) -> None:
        raise WorkerKilled

    with pytest.raises(WorkerKilled):
        reconciliation_execute(
            run_id=run.pk, page_size=3, sleep=_answering_clock(FILE, waits), on_page=die_after_first_page
        )
    run.refresh_from_db()
    assert (run.status, run.pages_pulled, run.rows_pulled, run.resume_cursors) == (
        RunStatus.RUNNING,
        1,
        3,
        {str(policy.pk): "3"},
    )

    done = reconciliation_execute(run_id=run.pk, page_size=3, sleep=_answering_clock(FILE, waits))

    assert done.status == RunStatus.COMPLETED, done.error
    assert (done.pages_pulled, done.rows_pulled, done.rows_matched, done.rows_expected) == (3, 7, 7, 7)


def test_post_for_an_insurer_without_a_usable_roster_is_422_naming_insurer(insurers, make_key) -> None:
    file = insurers["file"]
    file.inbound_folder = ""
    file.save(update_fields=["inbound_folder"])
    policy = PolicyFactory(insurer=file)
    client = make_key(partner=policy.employer.partner, employers=[policy.employer])

    response = client.post("/api/v1/reconciliations", {"insurer": FILE, "employer": policy.employer_id})

    assert response.status_code == 422
    assert response["Content-Type"] == "application/problem+json"
    assert [(e["pointer"], e["detail"]) for e in response.json()["errors"]] == [
        ("/insurer", "Insurer 'sandbox-file' inbound folder is not set")
    ]
    assert ReconciliationRun.objects.count() == 0
