from __future__ import annotations

import json
from datetime import date

import pytest
from django.core.management import call_command
from django.db import transaction

from apps.audit.models import AuditEvent
from apps.insurers.callback_secrets import callback_secret_open
from apps.insurers.models import Insurer
from apps.insurers.sandbox.engine import SandboxItem, age_on, decide, sandbox_apply
from apps.insurers.sandbox.models import SandboxApplied, SandboxConfig, default_rejection_rules
from apps.insurers.sandbox.setup import sandbox_register

pytestmark = pytest.mark.django_db


def test_register_creates_the_rest_sandbox_insurer_idempotently() -> None:
    (insurer,) = sandbox_register(base_url="http://127.0.0.1:8000/")
    secret = callback_secret_open(insurer.callback_secret, insurer_code="sandbox-rest")
    sealed_for_sandbox = SandboxConfig.objects.get(code="sandbox-rest").callback_secret

    (again,) = sandbox_register(base_url="http://127.0.0.1:8000")

    assert again.pk == insurer.pk
    assert again.endpoint == "http://127.0.0.1:8000/sandbox/sandbox-rest"
    assert again.protocol == "rest"
    assert secret.startswith("whsec_")
    assert again.callback_secret == insurer.callback_secret  # kept, not sealed again
    config = SandboxConfig.objects.get(code="sandbox-rest")
    assert config.callback_url == "http://127.0.0.1:8000/api/v1/insurer-callbacks/sandbox-rest"
    assert config.callback_secret == sealed_for_sandbox
    assert callback_secret_open(config.callback_secret, insurer_code="sandbox-rest", owner="sandbox") == secret
    assert secret not in again.callback_secret
    assert secret not in config.callback_secret
    assert Insurer.objects.filter(code="sandbox-rest").count() == 1
    audits = AuditEvent.objects.filter(action="insurer.sandbox_registered")
    assert audits.count() == 1
    assert secret not in json.dumps(audits.get().after)


def test_sandbox_command_configures_behaviour(capsys) -> None:
    call_command(
        "sandbox_insurer", "--code", "sandbox-rest", "--latency-ms", "25", "--failure-rate", "0.5", "--mode", "callback"
    )

    config = SandboxConfig.objects.get(code="sandbox-rest")
    assert (config.latency_ms, config.failure_rate, config.mode) == (25, 0.5, "callback")
    assert config.rejection_rules == default_rejection_rules()
    assert "failure_rate=0.5" in capsys.readouterr().out


def test_sandbox_command_rejects_a_failure_rate_above_one() -> None:
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("sandbox_insurer", "--failure-rate", "1.5")


def test_age_is_counted_on_the_effective_date() -> None:
    assert age_on(date(1960, 4, 1), date(2026, 4, 1)) == 66
    assert age_on(date(1960, 4, 2), date(2026, 4, 1)) == 65


def test_custom_rules_reject_the_first_match() -> None:
    rules = [{"employee_code_prefix": "DUP", "reason": "Member already exists"}, *default_rejection_rules()]
    item = SandboxItem("k", 1, "correction", "P", "DUP-1", date(2026, 1, 1), date(1990, 1, 1))

    assert decide(rules, item) == ("rejected", "Member already exists")
    assert decide(default_rejection_rules(), item) == ("confirmed", "")


def test_a_key_repeated_inside_one_batch_is_applied_once() -> None:
    config = SandboxConfig.objects.create(code="sbx")
    item = SandboxItem("same", 1, "addition", "P", "E1", date(2026, 1, 1), date(1990, 1, 1))

    with transaction.atomic():
        results, owed = sandbox_apply(config=config, items=[item, item])

    assert results[0]["outcome"] == results[1]["outcome"] == "confirmed"
    assert owed == []
    assert SandboxApplied.objects.get().times_seen == 2


def test_sandbox_routes_are_off_when_disabled(client, settings) -> None:
    settings.SANDBOX_INSURER_ENABLED = False

    response = client.post("/sandbox/sandbox-rest/endorsements/batch", data={}, content_type="application/json")

    assert response.status_code == 404
    assert not SandboxConfig.objects.exists()


def test_single_endorsement_route_uses_the_idempotency_key_header(client) -> None:
    body = {
        "endorsement_id": 7,
        "kind": "addition",
        "policy_number": "P",
        "effective_date": "2026-04-01",
        "member": {"employee_code": "E7", "date_of_birth": "1950-01-01"},
    }

    first = client.post(
        "/sandbox/sandbox-rest/endorsements", data=body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-7"
    )
    second = client.post(
        "/sandbox/sandbox-rest/endorsements", data=body, content_type="application/json", HTTP_IDEMPOTENCY_KEY="k-7"
    )

    assert first.status_code == 200
    assert first.json() == {
        "idempotency_key": "k-7",
        "outcome": "rejected",
        "reason": "Member age exceeds 65",
        "replayed": False,
    }
    assert second.json()["replayed"] is True
    assert SandboxApplied.objects.get().times_seen == 2


def test_malformed_batch_is_refused_without_applying(client) -> None:
    response = client.post(
        "/sandbox/sandbox-rest/endorsements/batch",
        data={"endorsements": [{"kind": "addition"}]},
        content_type="application/json",
    )

    assert response.status_code == 422
    assert not SandboxApplied.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_requests_with_one_key_apply_it_once(require_postgres) -> None:
    import threading

    from django.db import connection

    config = SandboxConfig.objects.create(code="sbx")
    item = SandboxItem("race", 1, "addition", "P", "E1", date(2026, 1, 1), date(1990, 1, 1))
    barrier = threading.Barrier(4)
    results: list[dict] = []

    def send() -> None:
        try:
            barrier.wait()
            answer, _ = sandbox_apply(config=config, items=[item])
            results.extend(answer)
        finally:
            connection.close()

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    applied = SandboxApplied.objects.get()
    assert applied.times_seen == 4
    assert len(results) == 4
    assert {r.get("insurer_reference") for r in results} == {f"SBX-{applied.pk}"}
    assert sorted(r["replayed"] for r in results) == [False, True, True, True]


def test_registering_the_three_sandboxes_gives_each_a_working_gateway(settings) -> None:
    from apps.insurers.gateways import gateway_for
    from apps.insurers.gateways.file import FileGateway
    from apps.insurers.gateways.rest import RestGateway
    from apps.insurers.gateways.soap import SoapGateway

    insurers = sandbox_register(
        base_url="http://127.0.0.1:8123/", codes=("sandbox-rest", "sandbox-soap", "sandbox-file")
    )

    assert [(i.code, i.protocol) for i in insurers] == [
        ("sandbox-rest", "rest"),
        ("sandbox-soap", "soap"),
        ("sandbox-file", "file"),
    ]
    rest, soap, file = (gateway_for(i) for i in insurers)
    assert isinstance(rest, RestGateway)
    assert rest.endpoint == "http://127.0.0.1:8123/sandbox/sandbox-rest"
    assert isinstance(soap, SoapGateway)
    assert soap.endpoint == "http://127.0.0.1:8123/sandbox/sandbox-soap/soap"
    assert isinstance(file, FileGateway)
    assert file.outbound.describe() == f"file://{settings.VAR_DIR}/insurers/sandbox-file/outbound"
    assert insurers[2].inbound_folder == "insurers/sandbox-file/inbound"
    assert len({callback_secret_open(i.callback_secret, insurer_code=i.code) for i in insurers}) == 3


def test_a_batch_larger_than_one_statement_can_carry_is_applied_whole_and_once() -> None:
    """A 10,000-row batch file is one `sandbox_apply`; 12 parameters a row would pass PostgreSQL's 65,535."""
    from apps.insurers.sandbox.engine import UPSERT_CHUNK

    config = SandboxConfig.objects.create(code="sbx-big")
    count = UPSERT_CHUNK * 2 + 7
    items = [
        SandboxItem(f"k{i}", i, "addition", "P", f"E{i}", date(2026, 1, 1), date(1990, 1, 1)) for i in range(count)
    ]

    results, _ = sandbox_apply(config=config, items=items)
    again, _ = sandbox_apply(config=config, items=items[:3])

    assert [r["idempotency_key"] for r in results] == [f"k{i}" for i in range(count)]
    references = {r["insurer_reference"] for r in results}
    assert len(references) == count
    assert references == set(SandboxApplied.objects.filter(code="sbx-big").values_list("insurer_reference", flat=True))
    assert [r["insurer_reference"] for r in again] == [r["insurer_reference"] for r in results[:3]]
    assert sorted(
        SandboxApplied.objects.filter(code="sbx-big", times_seen=2).values_list("idempotency_key", flat=True)
    ) == [
        "k0",
        "k1",
        "k2",
    ]
