"""File insurers (SPEC §8, ADR 0028): the batch file + manifest Keel writes, the sandbox file insurer's answer,
and the result-file import — verified, applied once per file, tampered files quarantined — on a local folder
and on a real SFTP server."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from datetime import date
from pathlib import Path

import pytest
from django.db import connection

from apps.audit.models import InsurerExchangeEvent, JobRunEvent
from apps.insurers.credentials import encrypt_credentials
from apps.insurers.files.importer import result_files_import
from apps.insurers.files.storage import LocalFolder, location_for
from apps.insurers.gateways.file import BATCH_SCHEMA_VERSION, batch_id_for, write_batch
from apps.insurers.models import InsurerSubmission, ResultFile, SubmissionState
from apps.insurers.sandbox.files import sandbox_file_process
from apps.insurers.sandbox.models import SandboxApplied
from apps.insurers.sandbox.setup import SANDBOX_FILE_CODE, sandbox_register
from apps.insurers.services import insurer_submit
from apps.insurers.tests.sftp_server import PASSWORD, sftp_server
from apps.outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db(transaction=True)
CODE = SANDBOX_FILE_CODE


@pytest.fixture
def file_insurer(tmp_path):
    (insurer,) = sandbox_register(base_url="http://127.0.0.1:1", codes=(CODE,), file_root=str(tmp_path))
    return insurer


def folder(tmp_path: Path, side: str) -> Path:
    return tmp_path / CODE / side


def files_in(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_file()) if path.exists() else []


def results_events() -> list[dict]:
    return [m.payload for m in OutboxMessage.objects.filter(topic="insurer.results_received").order_by("id")]


def test_a_window_becomes_one_jsonl_file_and_a_manifest(file_insurer, tmp_path, make_submission) -> None:
    submissions = [make_submission(), make_submission(kind="deletion")]

    results = insurer_submit(insurer_code=CODE, submissions=submissions)

    assert [(r.endorsement_id, r.outcome) for r in results] == [(s.endorsement_id, "pending") for s in submissions]
    batch_id = batch_id_for(submissions)
    out = folder(tmp_path, "outbound")
    assert files_in(out) == [f"{batch_id}.jsonl", f"{batch_id}.manifest.json"]
    content = (out / f"{batch_id}.jsonl").read_bytes()
    rows = [json.loads(line) for line in content.splitlines()]
    assert [r["idempotency_key"] for r in rows] == [s.idempotency_key for s in submissions]
    assert rows[0]["member"]["date_of_birth"] == "1990-05-17"
    manifest = json.loads((out / f"{batch_id}.manifest.json").read_text())
    assert {k: v for k, v in manifest.items() if k != "created_at"} == {
        "schema_version": BATCH_SCHEMA_VERSION,
        "batch_id": batch_id,
        "insurer": CODE,
        "file": f"{batch_id}.jsonl",
        "row_count": 2,
        "sha256": hashlib.sha256(content).hexdigest(),
    }
    assert manifest["created_at"].endswith("+00:00")
    assert dict(InsurerSubmission.objects.values_list("idempotency_key", "last_outcome")) == {
        s.idempotency_key: SubmissionState.PENDING for s in submissions
    }
    exchange = InsurerExchangeEvent.objects.get(operation="endorsements.file_write")
    assert exchange.error == ""
    for secret in ("asha.verma@example.com", "Asha", "Verma", "1990-05-17"):
        assert secret not in exchange.request_body


def test_manifest_is_written_last_and_no_temporary_file_is_left(tmp_path) -> None:
    order: list[str] = []

    class Recording(LocalFolder):
        def write_files_atomic(self, files):
            super().write_files_atomic(files)
            order.extend(name for name, _ in files)

    location = Recording(tmp_path)
    write_batch(location, schema_version="v", batch_id="b1", insurer="x", rows=[{"a": 1}, {"a": 2}])

    assert order == ["b1.jsonl", "b1.manifest.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b1.jsonl", "b1.manifest.json"]


def _round_trip(tmp_path, make_submission):
    ok = make_submission()
    too_old = make_submission(date_of_birth=date(1950, 1, 1))
    insurer_submit(insurer_code=CODE, submissions=[ok, too_old])
    assert sandbox_file_process(code=CODE) == 1
    return ok, too_old


def test_sandbox_answers_and_the_import_advances_each_row_once(file_insurer, tmp_path, make_submission) -> None:
    ok, too_old = _round_trip(tmp_path, make_submission)
    inbound = folder(tmp_path, "inbound")
    assert len(files_in(inbound)) == 2
    assert files_in(folder(tmp_path, "outbound")) == []

    counts = result_files_import(insurer_code=CODE)

    assert dict(counts) == {"imported": 1}
    [event] = results_events()
    by_id = {r["endorsement_id"]: r for r in event["results"]}
    applied = {a.idempotency_key: a for a in SandboxApplied.objects.filter(code=CODE)}
    assert by_id[ok.endorsement_id] == {
        "endorsement_id": ok.endorsement_id,
        "outcome": "confirmed",
        "insurer_reference": f"SBX-{applied[ok.idempotency_key].pk}",
        "rejection_class": None,
        "rejection_reason": None,
        "idempotency_key": ok.idempotency_key,
    }
    assert (by_id[too_old.endorsement_id]["outcome"], by_id[too_old.endorsement_id]["rejection_class"]) == (
        "rejected",
        "age_limit",
    )
    assert dict(InsurerSubmission.objects.values_list("idempotency_key", "last_outcome")) == {
        ok.idempotency_key: "confirmed",
        too_old.idempotency_key: "rejected",
    }
    record = ResultFile.objects.get()
    assert (record.status, record.row_count, record.applied_count, record.unknown_count) == ("imported", 2, 2, 0)
    assert files_in(inbound) == []
    assert len(files_in(inbound / "imported")) == 2
    assert JobRunEvent.objects.filter(job="insurers.result_files_import", phase="end", status="succeeded").count() == 1


def test_a_reimported_result_file_changes_nothing(file_insurer, tmp_path, make_submission) -> None:
    _round_trip(tmp_path, make_submission)
    result_files_import(insurer_code=CODE)
    inbound = folder(tmp_path, "inbound")
    for name in files_in(inbound / "imported"):
        shutil.copy(inbound / "imported" / name, inbound / name)
    before = (OutboxMessage.objects.count(), list(InsurerSubmission.objects.values_list("last_outcome", flat=True)))

    counts = result_files_import(insurer_code=CODE)

    assert dict(counts) == {"duplicate": 1}
    assert ResultFile.objects.count() == 1
    after = (OutboxMessage.objects.count(), list(InsurerSubmission.objects.values_list("last_outcome", flat=True)))
    assert after == before
    assert len(files_in(inbound / "duplicates")) == 2


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        (lambda data, manifest: (data.replace(b'"confirmed"', b'"rejected"'), manifest), "checksum mismatch"),
        (
            lambda data, manifest: (data + data.splitlines(keepends=True)[0], manifest),
            "checksum mismatch",
        ),
        (
            lambda data, manifest: (data, {**manifest, "row_count": manifest["row_count"] + 1}),
            "row count mismatch",
        ),
        (lambda data, manifest: (data, {**manifest, "insurer": "someone-else"}), "manifest names insurer"),
        (lambda data, manifest: (data, {**manifest, "schema_version": "v0"}), "schema_version"),
        (
            lambda data, manifest: (
                b"not json\n",
                {**manifest, "sha256": hashlib.sha256(b"not json\n").hexdigest(), "row_count": 1},
            ),
            "line 1 is not JSON",
        ),
    ],
)
def test_a_tampered_result_file_is_quarantined_and_nothing_is_applied(
    file_insurer, tmp_path, make_submission, tamper, error
) -> None:
    _round_trip(tmp_path, make_submission)
    inbound = folder(tmp_path, "inbound")
    [manifest_name] = [n for n in files_in(inbound) if n.endswith(".manifest.json")]
    manifest = json.loads((inbound / manifest_name).read_text())
    data, manifest = tamper((inbound / manifest["file"]).read_bytes(), manifest)
    (inbound / manifest["file"]).write_bytes(data)
    (inbound / manifest_name).write_text(json.dumps(manifest))
    outbox_before = OutboxMessage.objects.count()

    counts = result_files_import(insurer_code=CODE)

    assert dict(counts) == {"quarantined": 1}
    record = ResultFile.objects.get()
    assert record.status == "quarantined"
    assert error in record.error
    assert record.sha256 == hashlib.sha256(data).hexdigest()
    assert OutboxMessage.objects.count() == outbox_before
    assert set(InsurerSubmission.objects.values_list("last_outcome", flat=True)) == {"pending"}
    assert files_in(inbound) == []
    assert len(files_in(inbound / "quarantine")) == 2


@pytest.mark.postgres
def test_two_concurrent_importers_import_a_file_exactly_once(
    file_insurer, tmp_path, make_submission, require_postgres
) -> None:
    for _ in range(3):
        insurer_submit(insurer_code=CODE, submissions=[make_submission() for _ in range(50)])
    assert sandbox_file_process(code=CODE) == 3
    barrier = threading.Barrier(2)
    outcomes: list[dict[str, int]] = []
    errors: list[BaseException] = []

    def importer() -> None:
        try:
            barrier.wait(timeout=10)
            outcomes.append(dict(result_files_import(insurer_code=CODE)))
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=importer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert sum(o.get("imported", 0) for o in outcomes) == 3
    assert ResultFile.objects.filter(status="imported").count() == 3
    events = results_events()
    keys = [r["idempotency_key"] for e in events for r in e["results"]]
    assert len(keys) == len(set(keys)) == 150


def test_file_insurer_over_a_real_sftp_server(file_insurer, tmp_path, make_submission) -> None:
    root = tmp_path / "sftp-root"
    root.mkdir()
    with sftp_server(root) as server:
        file_insurer.outbound_folder = server.uri("to-insurer")
        file_insurer.inbound_folder = server.uri("from-insurer")
        file_insurer.credentials = encrypt_credentials(
            {"sftp_password": PASSWORD, "sftp_host_key": server.host_key}, insurer_code=CODE
        )
        file_insurer.save()
        ok = make_submission()
        too_old = make_submission(date_of_birth=date(1950, 1, 1))

        insurer_submit(insurer_code=CODE, submissions=[ok, too_old])
        assert len(files_in(root / "to-insurer")) == 2
        assert sandbox_file_process(code=CODE) == 1
        assert dict(result_files_import(insurer_code=CODE)) == {"imported": 1}
        assert dict(result_files_import(insurer_code=CODE)) == {}

    assert dict(InsurerSubmission.objects.values_list("idempotency_key", "last_outcome")) == {
        ok.idempotency_key: "confirmed",
        too_old.idempotency_key: "rejected",
    }
    assert len(files_in(root / "from-insurer" / "imported")) == 2
    assert PASSWORD not in file_insurer.credentials


def test_an_sftp_server_with_another_host_key_is_refused(tmp_path) -> None:
    from apps.insurers.files.storage import StorageError

    with sftp_server(tmp_path) as server:
        other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"
        location = location_for(
            server.uri("x"), credentials={"sftp_password": PASSWORD, "sftp_host_key": other}, what="test folder"
        )
        with pytest.raises(StorageError, match="HostKeyNotVerifiable"):
            location.write_files_atomic([("a.jsonl", b"{}\n")])
    assert list(tmp_path.iterdir()) == []
