"""The set-based result-file import (issue 11): each row means exactly what the same answer by callback means.

One result file mixes every case — a confirmation, a rejection, a row naming nothing Keel sent, a confirmation of
an endorsement Keel already FAILED (an insurer conflict, not applied) and a duplicated line — and is applied in
bulk; importing the same file again changes nothing anywhere."""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.common.actors import Actor
from apps.endorsements import services
from apps.endorsements.models import Endorsement, EndorsementHistory, EndorsementStatus
from apps.endorsements.parsing import draft_from_request
from apps.endorsements.tests.factories import PolicyFactory, addition
from apps.insurers.files.importer import result_files_import
from apps.insurers.files.storage import LocalFolder
from apps.insurers.gateways.file import RESULT_SCHEMA_VERSION, write_batch
from apps.insurers.models import InsurerConflict, InsurerSubmission, ResultFile
from apps.insurers.sandbox.setup import SANDBOX_FILE_CODE, sandbox_register
from apps.ledger import services as ledger
from apps.ledger.models import HoldResolution
from apps.outbox.models import OutboxMessage
from apps.outbox.testing import drain
from apps.partners.webhooks.models import Event

pytestmark = pytest.mark.django_db(transaction=True)
S = EndorsementStatus
SYSTEM = Actor.system("tests")
CODE = SANDBOX_FILE_CODE


@pytest.fixture
def sent(tmp_path):
    """Three additions (effective in a week) Keel sent to the file insurer: its batch file is written, each
    endorsement SENT with a submission-log row awaiting the result file."""
    (insurer,) = sandbox_register(base_url="http://127.0.0.1:1", codes=(CODE,), file_root=str(tmp_path))
    policy = PolicyFactory(insurer=insurer)
    ledger.topup_post(employer_id=policy.employer_id, amount=10_000_000, reference="bulk-import", actor=SYSTEM)
    effective = timezone.localdate() + timedelta(days=7)
    for code in ("M-1", "M-2", "M-3"):
        services.endorsement_submit(
            employer=policy.employer,
            policy=policy,
            draft=draft_from_request(addition(policy, code, effective=effective)),
            partner_id=policy.employer.partner_id,
            actor=SYSTEM,
        )
    drain()
    services.scheduler_tick(actor=SYSTEM, force=True)
    drain()
    rows = list(Endorsement.objects.order_by("employee_code"))
    assert [e.status for e in rows] == [S.SENT] * 3
    return insurer, rows, tmp_path / CODE / "inbound"


def _result_file(inbound, rows: list[dict]) -> None:
    write_batch(LocalFolder(inbound), schema_version=RESULT_SCHEMA_VERSION, batch_id="r-1", insurer=CODE, rows=rows)


def _snapshot() -> dict:
    return {
        "endorsements": sorted(Endorsement.objects.values_list("pk", "status", "insurer_reference", "rejection_class")),
        "log": sorted(InsurerSubmission.objects.values_list("pk", "last_outcome", "insurer_reference", "responded_at")),
        "history": EndorsementHistory.objects.count(),
        "audit": AuditEvent.objects.count(),
        "events": Event.objects.count(),
        "outbox": OutboxMessage.objects.count(),
        "conflicts": sorted(InsurerConflict.objects.values_list("endorsement_id", "occurrences")),
        "hold_resolutions": sorted(HoldResolution.objects.values_list("hold__reference", "kind")),
    }


def test_mixed_results_are_applied_in_bulk_like_callbacks_and_a_reimport_changes_nothing(sent) -> None:
    _insurer, (confirmed, rejected, failed), inbound = sent
    Endorsement.objects.filter(pk=failed.pk).update(status=S.FAILED)  # Keel decided before the insurer answered
    history_before = EndorsementHistory.objects.count()
    key = {e.pk: e.idempotency_key for e in (confirmed, rejected, failed)}
    _result_file(
        inbound,
        [
            {"idempotency_key": key[confirmed.pk], "outcome": "confirmed", "insurer_reference": "INS-1"},
            {"idempotency_key": key[rejected.pk], "outcome": "rejected", "reason": "Member age exceeds 65"},
            {"idempotency_key": "never-sent-by-keel", "outcome": "confirmed", "insurer_reference": "INS-X"},
            {"idempotency_key": key[failed.pk], "outcome": "confirmed", "insurer_reference": "INS-3"},
            {"idempotency_key": key[confirmed.pk], "outcome": "confirmed", "insurer_reference": "INS-1"},  # duplicate
        ],
    )

    assert result_files_import(insurer_code=CODE) == {"imported": 1}
    drain()

    record = ResultFile.objects.get()
    assert (record.status, record.row_count, record.applied_count, record.unknown_count) == ("imported", 5, 3, 1)
    states = {e.pk: (e.status, e.insurer_reference, e.rejection_class) for e in Endorsement.objects.all()}
    assert states == {
        confirmed.pk: (S.CONFIRMED, "INS-1", ""),
        rejected.pk: (S.REJECTED, "", "age_limit"),
        failed.pk: (S.FAILED, "", ""),  # not applied over Keel's decision
    }
    log = {s.endorsement_id: (s.last_outcome, s.insurer_reference) for s in InsurerSubmission.objects.all()}
    assert log == {
        confirmed.pk: ("confirmed", "INS-1"),
        rejected.pk: ("rejected", ""),
        failed.pk: ("confirmed", "INS-3"),
    }
    moves = EndorsementHistory.objects.order_by("id").values_list("endorsement_id", "from_status", "to_status")
    assert list(moves)[history_before:] == [(confirmed.pk, S.SENT, S.CONFIRMED), (rejected.pk, S.SENT, S.REJECTED)]
    audits = AuditEvent.objects.filter(action__in=["endorsement.confirmed", "endorsement.rejected"])
    assert sorted(audits.values_list("object_id", "action")) == sorted(
        [(str(confirmed.pk), "endorsement.confirmed"), (str(rejected.pk), "endorsement.rejected")]
    )
    events = Event.objects.filter(type__in=["endorsement.confirmed", "endorsement.rejected"])
    assert sorted(events.values_list("object_id", "type")) == sorted(
        [(str(confirmed.pk), "endorsement.confirmed"), (str(rejected.pk), "endorsement.rejected")]
    )
    [conflict] = InsurerConflict.objects.all()
    assert (conflict.endorsement_id, conflict.insurer_outcome, conflict.keel_status, conflict.source) == (
        failed.pk,
        "confirmed",
        S.FAILED,
        "result_file",
    )
    resolutions = list(HoldResolution.objects.values_list("hold__reference", "kind"))
    assert resolutions == [(rejected.hold_reference, "released")]  # the confirmed one stays held until ACTIVE

    # The same file again (an insurer re-sends it): claimed before, nothing of it is applied or published.
    before = _snapshot()
    for name in ("r-1.jsonl", "r-1.manifest.json"):
        shutil.copy(inbound / "imported" / name, inbound / name)

    assert result_files_import(insurer_code=CODE) == {"duplicate": 1}
    drain()

    assert _snapshot() == before
    assert ResultFile.objects.count() == 1


def test_the_same_results_in_a_new_file_publish_nothing_new(sent) -> None:
    """A corrected file under another name re-states results already recorded: claimed as a new file, but no
    row differs from the log, so nothing is published and no endorsement moves again."""
    _insurer, (first, second, _third), inbound = sent
    rows = [
        {"idempotency_key": first.idempotency_key, "outcome": "confirmed", "insurer_reference": "INS-1"},
        {"idempotency_key": second.idempotency_key, "outcome": "confirmed", "insurer_reference": "INS-2"},
    ]
    _result_file(inbound, rows)
    assert result_files_import(insurer_code=CODE) == {"imported": 1}
    drain()
    before = _snapshot()
    write_batch(LocalFolder(inbound), schema_version=RESULT_SCHEMA_VERSION, batch_id="r-2", insurer=CODE, rows=rows)

    assert result_files_import(insurer_code=CODE) == {"imported": 1}
    drain()

    after = _snapshot()
    assert after == before
    assert list(ResultFile.objects.order_by("id").values_list("name", "applied_count", "unknown_count")) == [
        ("r-1.jsonl", 2, 0),
        ("r-2.jsonl", 0, 0),
    ]
