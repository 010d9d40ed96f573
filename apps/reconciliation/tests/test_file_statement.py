"""A file insurer's statement of charges (ADR 0051): the sandbox file insurer answers a roster request with a
statement file beside the roster (JSONL + manifest, checksum verified like the roster), and the run compares it
with Keel's captures and refunds per endorsement exactly as for REST and SOAP.

Endorsements reach ACTIVE through the real pipeline over files (batch file → sandbox → result file → import).
"""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from apps.endorsements import services
from apps.endorsements.models import Endorsement, EndorsementStatus
from apps.insurers.files.importer import result_files_import
from apps.insurers.sandbox.files import sandbox_file_process
from apps.insurers.sandbox.models import SandboxCharge
from apps.insurers.sandbox.roster import sandbox_charge_change, sandbox_charge_drop
from apps.insurers.sandbox.roster_files import sandbox_roster_requests_answer
from apps.insurers.sandbox.setup import sandbox_register
from apps.ledger.models import LedgerTransaction
from apps.outbox.testing import drain
from apps.reconciliation.models import Discrepancy, InsurerRosterEntry, RunStatus
from apps.reconciliation.runner import reconciliation_execute
from apps.reconciliation.tests.conftest import SYSTEM, policy_with_active_additions

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

FILE = "sandbox-file"


@pytest.fixture
def file_policy(live_server, make_key, time_machine, require_postgres, tmp_path):
    """A sandbox-file policy with three additions ACTIVE through the file pipeline (each captured in Keel and
    charged on the sandbox's statement), the sandbox's roster what Keel covers."""
    time_machine.move_to(timezone.make_aware(timezone.datetime(2026, 6, 1, 10, 0)), tick=True)
    insurers = sandbox_register(
        base_url=live_server.url, codes=("sandbox-rest", FILE), file_root=str(tmp_path / "insurers")
    )
    insurer = {i.code: i for i in insurers}[FILE]
    policy = policy_with_active_additions(insurer=insurer, make_key=make_key, pump=_file_pipeline)
    return policy, tmp_path / "insurers" / FILE


def _file_pipeline() -> None:
    """Outbox → scheduler → batch file → sandbox → result file → import, until every endorsement is ACTIVE."""
    for _ in range(10):
        drain()
        services.scheduler_tick(actor=SYSTEM, force=True)
        drain()
        sandbox_file_process(code=FILE)
        result_files_import(insurer_code=FILE)
        drain()
        if not Endorsement.objects.exclude(status=EndorsementStatus.ACTIVE).exists():
            return


def _answering(waits: list[float], then=None):
    def sleep(seconds: float) -> None:
        waits.append(seconds)
        sandbox_roster_requests_answer(code=FILE)
        if then is not None:
            then()

    return sleep


def test_file_statement_matching_the_ledger_gives_no_discrepancy_and_is_imported(file_policy, start_run) -> None:
    policy, root = file_policy
    endorsements = list(Endorsement.objects.order_by("pk"))
    captured = sorted(
        LedgerTransaction.objects.filter(kind="capture", endorsement_id__isnull=False).values_list(
            "endorsement_id", "amount"
        )
    )
    assert captured == [(e.pk, e.premium_amount) for e in endorsements]
    assert sorted(SandboxCharge.objects.filter(code=FILE).values_list("endorsement_id", "amount")) == captured
    run = start_run(policy)

    done = reconciliation_execute(run_id=run.pk, page_size=2, sleep=_answering([]))

    assert done.status == RunStatus.COMPLETED, done.error
    assert (done.summary["matched"], Discrepancy.objects.filter(run=done).count()) == (3, 0)
    request = f"run{run.pk}-policy{policy.pk}"
    imported = root / "inbound" / "imported"
    assert sorted(p.name for p in imported.iterdir() if request in p.name) == [
        f"roster-{request}.jsonl",
        f"roster-{request}.roster-manifest.json",
        f"statement-{request}.jsonl",
        f"statement-{request}.statement-manifest.json",
    ]
    lines = (imported / f"statement-{request}.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"endorsement_id": e, "amount": a} for e, a in captured]


def test_file_insurer_charging_a_wrong_amount_and_missing_a_charge_is_found(file_policy, start_run) -> None:
    policy, _ = file_policy
    first, second, _third = Endorsement.objects.order_by("pk")
    sandbox_charge_change(code=FILE, endorsement_id=first.pk, amount=first.premium_amount + 137)
    sandbox_charge_drop(code=FILE, endorsement_id=second.pk)
    run = start_run(policy)

    done = reconciliation_execute(run_id=run.pk, page_size=2, sleep=_answering([]))

    assert done.status == RunStatus.COMPLETED, done.error
    found = sorted(
        Discrepancy.objects.filter(run=done).values_list(
            "kind", "endorsement_id", "keel_value", "insurer_value", "severity"
        )
    )
    assert found == [
        ("amount_mismatch", first.pk, first.premium_amount, first.premium_amount + 137, "high"),
        ("charge_missing", second.pk, second.premium_amount, None, "high"),
    ]
    assert (done.summary["amount_mismatch"], done.summary["charge_missing"], done.summary["matched"]) == (1, 1, 3)


def test_file_statement_not_matching_its_manifest_is_quarantined_and_the_run_fails(file_policy, start_run) -> None:
    policy, root = file_policy
    run = start_run(policy)
    request = f"run{run.pk}-policy{policy.pk}"
    inbound = root / "inbound"

    def tamper() -> None:
        data = inbound / f"statement-{request}.jsonl"
        if data.exists():
            data.write_bytes(data.read_bytes().replace(b'"amount":', b'"amount":1'))

    done = reconciliation_execute(run_id=run.pk, page_size=2, sleep=_answering([], then=tamper))

    assert done.status == RunStatus.FAILED
    assert done.error.startswith(f"statement file statement-{request}.jsonl quarantined: sha256 ")
    assert sorted(p.name for p in (inbound / "quarantine").iterdir()) == [
        f"statement-{request}.jsonl",
        f"statement-{request}.statement-manifest.json",
    ]
    # The roster was pulled and kept; no money discrepancy was written from the refused statement.
    assert (done.rows_pulled, InsurerRosterEntry.objects.filter(policy=policy).count()) == (3, 3)
    assert not Discrepancy.objects.filter(run=done, kind__in=("amount_mismatch", "charge_missing")).exists()
