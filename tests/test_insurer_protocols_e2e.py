"""One end-to-end proof for every insurer protocol (SPEC §8, issue 11): 300 endorsements — additions (one
over 65), then deletions and corrections of the confirmed members — go through the real API, outbox relay and
consumers, scheduler windows, the protocol's gateway and the sandbox insurer over that protocol (REST and
SOAP over real HTTP, files through the insurer's folders and the result-file import) to terminal states.
The sandbox applied each idempotency key once, the ledger verifies, and a redelivered message or a
re-imported result file changes nothing; a tampered result file is quarantined."""

from __future__ import annotations

import hashlib
import json
import shutil
from datetime import date

import pytest
from django.core.management import call_command
from django.utils import timezone

from apps.common.actors import Actor
from apps.employers.models import Coverage, CoverageChange
from apps.endorsements import services
from apps.endorsements.models import Endorsement, EndorsementStatus
from apps.endorsements.tests.factories import PolicyFactory, addition, correction, deletion
from apps.insurers.files.importer import result_files_import
from apps.insurers.models import ResultFile
from apps.insurers.sandbox.files import sandbox_file_process
from apps.insurers.sandbox.models import SandboxApplied
from apps.insurers.sandbox.setup import sandbox_register
from apps.ledger import services as ledger
from apps.ledger.models import HoldResolution, LedgerEntry
from apps.outbox.models import OutboxMessage
from apps.outbox.tasks import deliver_envelope
from apps.outbox.testing import drain

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

S = EndorsementStatus
SYSTEM = Actor.system("tests")
TODAY = date(2026, 6, 1)
ADDITIONS, DELETIONS, CORRECTIONS = 200, 50, 50
OVER_65 = "M-0007"
TERMINAL = {S.ACTIVE, S.REJECTED, S.FAILED, S.CANCELLED}


@pytest.fixture
def world(live_server, make_key, time_machine, require_postgres, tmp_path, request):
    time_machine.move_to(timezone.make_aware(timezone.datetime(2026, 6, 1, 10, 0)), tick=True)
    protocol = request.param
    insurers = sandbox_register(
        base_url=live_server.url, codes=("sandbox-rest", "sandbox-soap", "sandbox-file"), file_root=str(tmp_path)
    )
    insurer = {i.protocol: i for i in insurers}[protocol]
    policy = PolicyFactory(insurer=insurer)
    client = make_key(partner=policy.employer.partner, all_employers=True)
    ledger.topup_post(employer_id=policy.employer_id, amount=50_000_000, reference="e2e-topup", actor=SYSTEM)
    return protocol, insurer, policy, client, tmp_path / insurer.code


def upload(client, policy, rows: list[dict]) -> None:
    body = {
        "employer": policy.employer_id,
        "policy": policy.pk,
        "rows": [{k: v for k, v in row.items() if k not in ("employer", "policy")} for row in rows],
    }
    response = client.post("/api/v1/endorsement-batches", body)
    assert response.status_code == 202, response.content
    assert (response.json()["accepted"], response.json()["rejected"]) == (len(rows), 0)


def pump(protocol: str, code: str, delivered: list) -> None:
    """Outbox → consumers → scheduler window → gateway → (file: sandbox answers, beat import) until quiet."""
    for _ in range(40):
        delivered += drain()
        services.scheduler_tick(actor=SYSTEM, force=True)
        delivered += drain()
        if protocol == "file":
            sandbox_file_process(code=code)
            result_files_import(insurer_code=code)
            delivered += drain()
        if not Endorsement.objects.exclude(status__in=TERMINAL).exists():
            return
    raise AssertionError(
        f"not terminal: {list(Endorsement.objects.exclude(status__in=TERMINAL).values('id', 'status'))}"
    )


def snapshot(code: str) -> tuple:
    return (
        sorted(Endorsement.objects.values_list("id", "status", "rejection_class", "insurer_reference", "updated_at")),
        LedgerEntry.objects.count(),
        HoldResolution.objects.count(),
        Coverage.objects.count(),
        CoverageChange.objects.count(),
        sorted(SandboxApplied.objects.filter(code=code).values_list("idempotency_key", "times_seen")),
        OutboxMessage.objects.count(),
        ResultFile.objects.filter(status="imported").count(),
    )


@pytest.mark.parametrize("world", ["rest", "soap", "file"], indirect=True)
def test_300_endorsements_reach_terminal_states_once_over_every_protocol(world) -> None:
    protocol, insurer, policy, client, folders = world
    delivered: list = []
    codes = [f"M-{i:04d}" for i in range(ADDITIONS)]

    # When: 200 additions (one member over 65), then deletions and corrections of confirmed members.
    upload(
        client,
        policy,
        [addition(policy, c, effective=TODAY, dob="1950-01-01" if c == OVER_65 else "1990-05-17") for c in codes],
    )
    pump(protocol, insurer.code, delivered)
    members = [c for c in codes if c != OVER_65]
    leavers, changed = members[:DELETIONS], members[DELETIONS : DELETIONS + CORRECTIONS]
    upload(
        client,
        policy,
        [deletion(policy, c, effective=TODAY) for c in leavers]
        + [
            correction(policy, c, effective=TODAY, sum_insured="600000.00")
            if i % 2
            else correction(policy, c, effective=TODAY, last_name="Iyer")
            for i, c in enumerate(changed)
        ],
    )
    pump(protocol, insurer.code, delivered)

    # Then: every endorsement is terminal — all ACTIVE but the over-65 addition, REJECTED as age_limit.
    endorsements = list(Endorsement.objects.order_by("id"))
    assert len(endorsements) == ADDITIONS + DELETIONS + CORRECTIONS == 300
    assert {(e.type, e.status) for e in endorsements if e.employee_code != OVER_65} == {
        ("addition", S.ACTIVE),
        ("deletion", S.ACTIVE),
        ("correction", S.ACTIVE),
    }
    [rejected] = [e for e in endorsements if e.employee_code == OVER_65]
    assert (rejected.status, rejected.rejection_class, rejected.rejection_reason) == (
        S.REJECTED,
        "age_limit",
        "Member age exceeds 65",
    )
    assert all(e.insurer_reference.startswith("SBX-") for e in endorsements if e.status == S.ACTIVE)
    assert Coverage.objects.filter(policy=policy, status="active").count() == ADDITIONS - 1 - DELETIONS
    assert Coverage.objects.filter(policy=policy, status="ended").count() == DELETIONS
    # Each idempotency key reached the sandbox over this protocol and was applied exactly once.
    applied = dict(SandboxApplied.objects.filter(code=insurer.code).values_list("idempotency_key", "times_seen"))
    assert applied == {e.idempotency_key: 1 for e in endorsements}
    assert not SandboxApplied.objects.exclude(code=insurer.code).exists()
    call_command("ledger_verify")

    # A redelivered message (every one the pipeline consumed) changes nothing.
    before = snapshot(insurer.code)
    for message in delivered:
        deliver_envelope(message.to_envelope())
    assert drain() == []
    assert snapshot(insurer.code) == before

    if protocol == "file":
        inbound = folders / "inbound"
        imported = sorted(p.name for p in (inbound / "imported").iterdir())
        assert len(imported) >= 2 * 3  # at least 3 windows (batch size 100), each a file + its manifest
        # A result file dropped again is not applied again…
        for name in imported:
            shutil.copy(inbound / "imported" / name, inbound / name)
        assert dict(result_files_import(insurer_code=insurer.code)) == {"duplicate": len(imported) // 2}
        assert drain() == []
        assert snapshot(insurer.code) == before
        # …and a tampered one is quarantined, nothing of it applied.
        manifest_name = next(n for n in imported if n.endswith(".manifest.json"))
        manifest = json.loads((inbound / "duplicates" / manifest_name).read_text())
        data = (inbound / "duplicates" / manifest["file"]).read_bytes().replace(b'"confirmed"', b'"rejected"', 1)
        (inbound / manifest["file"]).write_bytes(data)
        shutil.copy(inbound / "duplicates" / manifest_name, inbound / manifest_name)
        assert dict(result_files_import(insurer_code=insurer.code)) == {"quarantined": 1}
        quarantined = ResultFile.objects.get(status="quarantined")
        assert "checksum mismatch" in quarantined.error
        assert quarantined.sha256 == hashlib.sha256(data).hexdigest()
        assert drain() == []
        assert snapshot(insurer.code)[:7] == before[:7]
    call_command("ledger_verify")
