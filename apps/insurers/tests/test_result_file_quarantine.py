"""What a newcomer trial found in the result-file import (issue 11): self-contradicting files, rows naming
another endorsement, manifests whose data file never arrives, job runs on every idle tick, evidence overwritten
on disk, and quarantined files operators could not see."""

from __future__ import annotations

import hashlib
import json
import os
import time
from datetime import date
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from apps.audit.models import JobRunEvent
from apps.insurers.files.importer import result_files_import
from apps.insurers.files.storage import LocalFolder, location_for
from apps.insurers.models import Insurer, InsurerSubmission, ResultFile
from apps.insurers.sandbox.files import sandbox_file_process, sandbox_files_process_all
from apps.insurers.sandbox.setup import SANDBOX_FILE_CODE, sandbox_register
from apps.insurers.services import insurer_submit
from apps.insurers.tests.sftp_server import PASSWORD, sftp_server
from apps.outbox.models import OutboxMessage

pytestmark = pytest.mark.django_db(transaction=True)
CODE = SANDBOX_FILE_CODE
JOB = "insurers.result_files_import"


@pytest.fixture
def file_insurer(tmp_path):
    (insurer,) = sandbox_register(base_url="http://127.0.0.1:1", codes=(CODE,), file_root=str(tmp_path))
    return insurer


def files_in(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_file()) if path.exists() else []


def answered(tmp_path, make_submission):
    """Two submissions sent and answered by the sandbox: (ok, too_old, inbound folder, manifest name)."""
    ok = make_submission()
    too_old = make_submission(date_of_birth=date(1950, 1, 1))
    insurer_submit(insurer_code=CODE, submissions=[ok, too_old])
    assert sandbox_file_process(code=CODE) == 1
    inbound = tmp_path / CODE / "inbound"
    [manifest_name] = [n for n in files_in(inbound) if n.endswith(".manifest.json")]
    return ok, too_old, inbound, manifest_name


def rewrite(inbound: Path, manifest_name: str, rows: list[dict]) -> tuple[str, bytes]:
    """Replace the result file's rows, with a manifest that matches them (checksum and row count)."""
    manifest = json.loads((inbound / manifest_name).read_text())
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    (inbound / manifest["file"]).write_bytes(data)
    manifest.update(sha256=hashlib.sha256(data).hexdigest(), row_count=len(rows))
    (inbound / manifest_name).write_text(json.dumps(manifest))
    return manifest["file"], data


def state() -> tuple:
    """Everything an import could change besides the ResultFile row and the file moves."""
    return (
        OutboxMessage.objects.count(),
        sorted(InsurerSubmission.objects.values_list("idempotency_key", "last_outcome", "insurer_reference")),
    )


def runs(job: str = JOB) -> list[dict]:
    return [e.counts for e in JobRunEvent.objects.filter(job=job, phase="end").order_by("id")]


def assert_quarantined_and_nothing_applied(inbound: Path, before: tuple, error: str) -> ResultFile:
    record = ResultFile.objects.get()
    assert (record.status, record.error, record.row_count, record.applied_count) == ("quarantined", error, 0, 0)
    assert state() == before
    assert files_in(inbound) == []
    assert len(files_in(inbound / "quarantine")) == 2
    return record


# 1. A file that contradicts itself


def test_a_file_whose_rows_disagree_about_one_key_is_quarantined(file_insurer, tmp_path, make_submission) -> None:
    ok, too_old, inbound, manifest_name = answered(tmp_path, make_submission)
    rewrite(
        inbound,
        manifest_name,
        [
            {"idempotency_key": ok.idempotency_key, "outcome": "confirmed", "endorsement_id": ok.endorsement_id},
            {"idempotency_key": too_old.idempotency_key, "outcome": "rejected", "reason": "age_limit"},
            {"idempotency_key": ok.idempotency_key, "outcome": "rejected", "endorsement_id": ok.endorsement_id},
        ],
    )
    before = state()

    counts = result_files_import(insurer_code=CODE)

    assert dict(counts) == {"quarantined": 1}
    assert_quarantined_and_nothing_applied(
        inbound,
        before,
        f"line 3: idempotency_key {ok.idempotency_key!r} contradicts line 1 "
        f"(confirmed, endorsement_id {ok.endorsement_id} vs rejected, endorsement_id {ok.endorsement_id})",
    )


def test_rows_of_one_key_differing_only_in_reference_are_a_contradiction(
    file_insurer, tmp_path, make_submission
) -> None:
    ok, _too_old, inbound, manifest_name = answered(tmp_path, make_submission)
    rewrite(
        inbound,
        manifest_name,
        [
            {"idempotency_key": ok.idempotency_key, "outcome": "confirmed", "insurer_reference": "R-1"},
            {"idempotency_key": ok.idempotency_key, "outcome": "confirmed", "insurer_reference": "R-2"},
        ],
    )
    before = state()

    assert dict(result_files_import(insurer_code=CODE)) == {"quarantined": 1}
    assert_quarantined_and_nothing_applied(
        inbound,
        before,
        f"line 2: idempotency_key {ok.idempotency_key!r} contradicts line 1 "
        "(confirmed, reference 'R-1' vs confirmed, reference 'R-2')",
    )


def test_an_exact_repeat_of_a_row_is_applied_once(file_insurer, tmp_path, make_submission) -> None:
    ok, _too_old, inbound, manifest_name = answered(tmp_path, make_submission)
    row = {"idempotency_key": ok.idempotency_key, "outcome": "confirmed", "insurer_reference": "R-1"}
    rewrite(inbound, manifest_name, [row, row])

    assert dict(result_files_import(insurer_code=CODE)) == {"imported": 1}

    record = ResultFile.objects.get()
    assert (record.status, record.row_count, record.applied_count, record.error) == ("imported", 2, 1, "")
    [event] = [m.payload for m in OutboxMessage.objects.filter(topic="insurer.results_received")]
    assert [(r["idempotency_key"], r["outcome"]) for r in event["results"]] == [(ok.idempotency_key, "confirmed")]


# 2. A row naming another endorsement than its key's


def test_a_row_whose_endorsement_id_is_not_its_keys_quarantines_the_file(
    file_insurer, tmp_path, make_submission
) -> None:
    ok, too_old, inbound, manifest_name = answered(tmp_path, make_submission)
    rewrite(
        inbound,
        manifest_name,
        [
            {
                "idempotency_key": too_old.idempotency_key,
                "outcome": "rejected",
                "endorsement_id": too_old.endorsement_id,
            },
            {"idempotency_key": ok.idempotency_key, "outcome": "confirmed", "endorsement_id": too_old.endorsement_id},
        ],
    )
    before = state()

    counts = result_files_import(insurer_code=CODE)

    assert dict(counts) == {"quarantined": 1}
    assert_quarantined_and_nothing_applied(
        inbound,
        before,
        f"line 2: endorsement_id mismatch: idempotency_key {ok.idempotency_key!r} belongs to endorsement "
        f"{ok.endorsement_id}, the row names {too_old.endorsement_id}",
    )


@pytest.mark.parametrize("bad", ["7", 0, -3, True, 1.5])
def test_an_endorsement_id_that_is_not_a_positive_integer_quarantines_the_file(
    file_insurer, tmp_path, make_submission, bad
) -> None:
    ok, _too_old, inbound, manifest_name = answered(tmp_path, make_submission)
    rewrite(
        inbound, manifest_name, [{"idempotency_key": ok.idempotency_key, "outcome": "confirmed", "endorsement_id": bad}]
    )
    before = state()

    assert dict(result_files_import(insurer_code=CODE)) == {"quarantined": 1}
    assert_quarantined_and_nothing_applied(inbound, before, "line 1: endorsement_id must be a positive integer")


# 3. A manifest whose data file is missing; job runs only for news


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_manifest_without_its_data_file_waits_then_is_quarantined_after_the_grace_period(
    file_insurer, tmp_path, make_submission, settings
) -> None:
    settings.INSURER_GATEWAY = {**settings.INSURER_GATEWAY, "RESULT_FILE_GRACE_SECONDS": 600.0}
    _ok, _too_old, inbound, manifest_name = answered(tmp_path, make_submission)
    data_name = json.loads((inbound / manifest_name).read_text())["file"]
    (inbound / data_name).unlink()
    before = state()

    # within the grace period: the data file may still be arriving — nothing recorded, the manifest stays
    for _ in range(3):
        assert dict(result_files_import(insurer_code=CODE)) == {"waiting": 1}
    assert ResultFile.objects.count() == 0
    assert files_in(inbound) == [manifest_name]
    assert runs() == [{"waiting": 1}]  # the first sighting only, not one run per tick

    _age(inbound / manifest_name, 601)
    assert dict(result_files_import(insurer_code=CODE)) == {"quarantined": 1}

    record = ResultFile.objects.get()
    assert record.status == "quarantined"
    assert record.name == data_name
    assert record.error.startswith(f"data file {data_name!r} named by the manifest is missing 60")
    assert record.error.endswith(" s after the manifest was written (grace 600 s)")
    assert state() == before
    assert files_in(inbound) == []
    assert files_in(inbound / "quarantine") == [manifest_name]
    assert runs() == [{"waiting": 1}, {"quarantined": 1}]
    assert dict(result_files_import(insurer_code=CODE)) == {}
    assert len(runs()) == 2


def test_a_misconfigured_file_insurer_is_recorded_and_warned_about_once_until_it_changes(
    file_insurer, tmp_path
) -> None:
    Insurer.objects.filter(code=CODE).update(inbound_folder="")

    with capture_logs() as logs:
        for _ in range(5):
            assert dict(result_files_import()) == {"configuration": 1}
    assert runs() == [{"configuration": 1}]
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == ["insurers.inbound_misconfigured"]

    # another error is news again
    Insurer.objects.filter(code=CODE).update(inbound_folder="ftp://nowhere/x")
    with capture_logs() as logs:
        for _ in range(3):
            assert dict(result_files_import()) == {"configuration": 1}
    assert runs() == [{"configuration": 1}, {"configuration": 1}]
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == ["insurers.inbound_misconfigured"]

    # fixed, then broken again: the condition was cleared, so it is news at once
    Insurer.objects.filter(code=CODE).update(inbound_folder=str(tmp_path / "in"))
    assert dict(result_files_import()) == {}
    Insurer.objects.filter(code=CODE).update(inbound_folder="")
    assert dict(result_files_import()) == {"configuration": 1}
    assert runs() == [{"configuration": 1}] * 3


def test_a_known_condition_is_recorded_again_after_the_repeat_period(file_insurer, settings) -> None:
    settings.INSURER_GATEWAY = {**settings.INSURER_GATEWAY, "CONDITION_REPEAT_SECONDS": 1.0}
    Insurer.objects.filter(code=CODE).update(inbound_folder="")
    result_files_import()
    result_files_import()
    assert runs() == [{"configuration": 1}]

    time.sleep(1.2)  # the cache entry's own expiry, not a wait for a result
    result_files_import()

    assert runs() == [{"configuration": 1}, {"configuration": 1}]


def test_a_job_run_records_when_it_started(file_insurer, tmp_path, make_submission) -> None:
    answered(tmp_path, make_submission)

    result_files_import(insurer_code=CODE)

    start, end = JobRunEvent.objects.filter(job=JOB).order_by("id")
    assert (start.phase, end.phase, end.status, end.counts) == ("start", "end", "succeeded", {"imported": 1})
    assert start.created_at <= end.created_at


def test_a_misconfigured_sandbox_file_insurer_does_not_stop_the_others_and_warns_once(
    file_insurer, tmp_path, caplog
) -> None:
    from django.core.cache import cache

    from apps.insurers.sandbox import files as sandbox_files

    cache.clear()  # the file jobs' condition memory (`files.conditions`) starts empty
    Insurer.objects.create(code="sandbox-file-2", name="Broken", protocol="file", outbound_folder="", is_active=True)

    with caplog.at_level("WARNING", logger=sandbox_files.__name__):
        for _ in range(3):
            assert sandbox_files_process_all() == 0
    warnings = [(r.getMessage(), getattr(r, "insurer", None)) for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [("sandbox.file_folder_unusable", "sandbox-file-2")]
    assert runs("insurers.sandbox_files") == []


# 4. Evidence on disk is never overwritten


def test_local_move_never_overwrites_an_earlier_file_of_the_same_name(tmp_path) -> None:
    location = LocalFolder(tmp_path)
    (tmp_path / "imported").mkdir()
    (tmp_path / "imported" / "b1.jsonl").write_bytes(b"first\n")
    (tmp_path / "b1.jsonl").write_bytes(b"second\n")

    kept = location.move("b1.jsonl", "imported")

    second = hashlib.sha256(b"second\n").hexdigest()[:12]
    assert kept == f"b1.{second}.jsonl"
    assert (tmp_path / "imported" / "b1.jsonl").read_bytes() == b"first\n"
    assert (tmp_path / "imported" / kept).read_bytes() == b"second\n"
    assert files_in(tmp_path) == []

    # the same bytes a third time: kept again, under checksum + timestamp
    (tmp_path / "b1.jsonl").write_bytes(b"second\n")
    third = location.move("b1.jsonl", "imported")
    assert third is not None
    assert third.startswith(f"b1.{second}.")
    assert third.endswith("Z.jsonl")
    assert sorted(files_in(tmp_path / "imported")) == sorted(["b1.jsonl", kept, third])
    assert location.move("b1.jsonl", "imported") is None  # gone already: not an error


def test_sftp_move_never_overwrites_an_earlier_file_of_the_same_name(tmp_path) -> None:
    root = tmp_path / "root"
    (root / "in" / "imported").mkdir(parents=True)
    (root / "in" / "imported" / "b1.jsonl").write_bytes(b"first\n")
    (root / "in" / "b1.jsonl").write_bytes(b"second\n")
    with sftp_server(root) as server:
        location = location_for(
            server.uri("in"), credentials={"sftp_password": PASSWORD, "sftp_host_key": server.host_key}, what="t"
        )
        kept = location.move("b1.jsonl", "imported")

    assert kept == f"b1.{hashlib.sha256(b'second' + bytes([10])).hexdigest()[:12]}.jsonl"
    assert (root / "in" / "imported" / "b1.jsonl").read_bytes() == b"first\n"
    assert (root / "in" / "imported" / kept).read_bytes() == b"second\n"
    assert files_in(root / "in") == []


def test_a_corrected_result_file_under_the_same_name_keeps_both_versions(
    file_insurer, tmp_path, make_submission
) -> None:
    ok, too_old, inbound, manifest_name = answered(tmp_path, make_submission)
    data_name = json.loads((inbound / manifest_name).read_text())["file"]
    rewrite(inbound, manifest_name, [{"idempotency_key": ok.idempotency_key, "outcome": "maybe"}])
    assert dict(result_files_import(insurer_code=CODE)) == {"quarantined": 1}
    bad = (inbound / "quarantine" / data_name).read_bytes()

    # the insurer sends a second bad file under the same name: both stay in quarantine/
    (inbound / manifest_name).write_bytes((inbound / "quarantine" / manifest_name).read_bytes())
    rewrite(inbound, manifest_name, [{"idempotency_key": too_old.idempotency_key, "outcome": "maybe"}])
    assert dict(result_files_import(insurer_code=CODE)) == {"quarantined": 1}

    kept = files_in(inbound / "quarantine")
    assert len(kept) == 4
    assert (inbound / "quarantine" / data_name).read_bytes() == bad
    assert ResultFile.objects.filter(status="quarantined").count() == 2


# 5. Operators see quarantined files


@pytest.fixture
def quarantined(file_insurer, tmp_path, make_submission) -> ResultFile:
    ok, _too_old, inbound, manifest_name = answered(tmp_path, make_submission)
    rewrite(inbound, manifest_name, [{"idempotency_key": ok.idempotency_key, "outcome": "maybe"}])
    assert dict(result_files_import(insurer_code=CODE)) == {"quarantined": 1}
    return ResultFile.objects.get()


def test_the_admin_lists_quarantined_files_with_their_error_and_time_label(
    client, django_user_model, quarantined
) -> None:
    admin_user = django_user_model.objects.create_superuser("ops-admin", password="pw-12345678")
    client.force_login(admin_user)

    response = client.get("/admin/insurers/resultfile/?status__exact=quarantined")

    assert response.status_code == 200
    html = response.content.decode()
    assert "Quarantined at" in html
    assert "Imported at" in html
    assert "line 1: outcome must be one of confirmed, rejected" in html
    assert quarantined.name in html
    assert (
        client.get("/admin/insurers/resultfile/?status__exact=imported").content.decode().count(quarantined.name) == 0
    )
    detail = client.get(f"/admin/insurers/resultfile/{quarantined.pk}/change/").content.decode()
    assert "Quarantined at" in detail
    assert "line 1: outcome must be one of confirmed, rejected" in detail


def test_metrics_count_quarantined_files_by_insurer(client, quarantined) -> None:
    text = client.get("/metrics").content.decode()

    assert f'keel_insurer_result_files_quarantined{{insurer="{CODE}"}} 1.0' in text


def test_the_ops_dashboard_links_the_quarantined_count_to_the_filtered_admin_list(
    client, django_user_model, quarantined
) -> None:
    staff = django_user_model.objects.create_user("ops-staff", password="pw-12345678", is_staff=True)
    client.force_login(staff)

    html = client.get("/ops/").content.decode()

    assert (
        '<a id="quarantined-files-count" class="bad" '
        'href="/admin/insurers/resultfile/?status__exact=quarantined">1</a>' in html
    )


def test_sftp_missing_data_file_is_reported_as_missing(tmp_path) -> None:
    from apps.insurers.files.storage import StorageMissingError

    with sftp_server(tmp_path) as server:
        location = location_for(
            server.uri("x"), credentials={"sftp_password": PASSWORD, "sftp_host_key": server.host_key}, what="t"
        )
        location.write_files_atomic([("a.manifest.json", b"{}")])
        assert location.modified_at("a.manifest.json").timestamp() == pytest.approx(time.time(), abs=60)
        with pytest.raises(StorageMissingError):
            location.read("a.jsonl")
        with pytest.raises(StorageMissingError):
            location.modified_at("a.jsonl")


def test_a_duplicate_that_cannot_be_moved_is_recorded_once_not_every_tick(
    file_insurer, tmp_path, make_submission
) -> None:
    _ok, _too_old, inbound, _manifest_name = answered(tmp_path, make_submission)
    assert dict(result_files_import(insurer_code=CODE)) == {"imported": 1}
    for name in files_in(inbound / "imported"):
        (inbound / name).write_bytes((inbound / "imported" / name).read_bytes())
    (inbound / "duplicates").write_bytes(b"")  # a file where the folder should be: every move fails

    for _ in range(3):
        assert dict(result_files_import(insurer_code=CODE)) == {"duplicate": 1}

    assert runs() == [{"imported": 1}, {"duplicate": 1}]
    assert len(files_in(inbound)) == 3  # the pair, and the obstacle


def test_local_move_without_hard_links_still_never_overwrites(tmp_path, monkeypatch) -> None:
    def no_links(source, target):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    location = LocalFolder(tmp_path)
    (tmp_path / "imported").mkdir()
    (tmp_path / "imported" / "b1.jsonl").write_bytes(b"first\n")
    (tmp_path / "b1.jsonl").write_bytes(b"second\n")

    kept = location.move("b1.jsonl", "imported")

    assert kept == f"b1.{hashlib.sha256(b'second' + bytes([10])).hexdigest()[:12]}.jsonl"
    assert (tmp_path / "imported" / "b1.jsonl").read_bytes() == b"first\n"
    assert (tmp_path / "imported" / kept).read_bytes() == b"second\n"
    assert files_in(tmp_path) == []
