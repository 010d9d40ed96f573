"""Issue 8, kind 14: the first run works on any port. `KEEL_PORT` is the one setting (README, .env.example):
`make run` serves on it, `KEEL_BASE_URL` derives from it unless set, and `seed_demo` repairs a sandbox address
stored by an earlier run on another port — then an endorsement reaches the sandbox over real HTTP there."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from django.core.management import call_command
from django.test import override_settings

from apps.audit.models import AuditEvent
from apps.insurers.contracts import EndorsementSubmission, MemberData
from apps.insurers.models import Insurer, InsurerProtocol, SandboxConfig
from apps.insurers.sandbox.setup import sandbox_register
from apps.insurers.services import insurer_submit

ROOT = Path(__file__).resolve().parent.parent


def _settings_value(name: str, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("KEEL_PORT", "KEEL_BASE_URL")}
    code = f"import django; django.setup(); from django.conf import settings; print(settings.{name})"
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings.local", **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return out.stdout.strip().splitlines()[-1]


def test_base_url_follows_keel_port_unless_set() -> None:
    assert _settings_value("KEEL_BASE_URL", KEEL_PORT="8137") == "http://127.0.0.1:8137"
    assert _settings_value("KEEL_BASE_URL") == "http://127.0.0.1:8000"
    assert _settings_value("KEEL_BASE_URL", KEEL_PORT="8137", KEEL_BASE_URL="https://keel.example") == (
        "https://keel.example"
    )


def _make_run_dry(cwd: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "KEEL_PORT"}
    out = subprocess.run(
        ["make", "-n", "-s", "run"], cwd=cwd, env={**clean, **env}, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_make_run_serves_on_keel_port_from_the_command_line_env_or_dotenv(tmp_path: Path) -> None:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    (tmp_path / "requirements").mkdir()
    for name in ("base.txt", "dev.txt"):
        (tmp_path / "requirements" / name).write_text("")

    assert "http://127.0.0.1:8000/" in _make_run_dry(tmp_path)
    assert "http://127.0.0.1:8136/" in _make_run_dry(tmp_path, KEEL_PORT="8136")
    (tmp_path / ".env").write_text("DEBUG=true\nKEEL_PORT=8135   # mine\n")
    assert "http://127.0.0.1:8135/" in _make_run_dry(tmp_path)
    assert "http://127.0.0.1:8134/" in _make_run_dry(tmp_path, KEEL_PORT="8134")  # the environment wins


def test_procfile_web_listens_on_keel_port_on_loopback_only() -> None:
    web = next(line for line in (ROOT / "config" / "Procfile").read_text().splitlines() if line.startswith("web:"))
    command = web.removeprefix("web:").strip()

    expanded = subprocess.run(
        ["bash", "-c", f"echo {command}"],
        env={"KEEL_PORT": "8133", "PATH": os.environ["PATH"]},
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    # The development server is reachable from this machine only (issue 14): 127.0.0.1, never 0.0.0.0. The
    # ASGI server (ADR 0050) takes host and port as two options.
    assert re.search(r"--host 127\.0\.0\.1 --port 8133\b", expanded), expanded
    assert "0.0.0.0" not in expanded


def test_port_setting_is_documented() -> None:
    assert "KEEL_PORT" in (ROOT / "README.md").read_text()
    assert re.search(r"^KEEL_PORT=8000\b", (ROOT / ".env.example").read_text(), re.MULTILINE)


@pytest.mark.django_db(transaction=True)
def test_seed_demo_repairs_a_stale_sandbox_address_and_the_sandbox_answers_there(live_server):
    # Given: an earlier run registered the sandboxes on port 8000 (or a `make demo` on a temporary port)
    sandbox_register(base_url="http://127.0.0.1:8000")
    Insurer.objects.create(
        code="sandbox-soap",
        name="Sandbox Insurer (SOAP)",
        protocol=InsurerProtocol.SOAP,
        endpoint="http://127.0.0.1:8000/sandbox/sandbox-soap?wsdl",
    )
    Insurer.objects.create(
        code="sandbox-file", name="Sandbox Insurer (files)", protocol=InsurerProtocol.FILE, endpoint="/srv/files"
    )
    out = io.StringIO()

    # When: seed_demo runs where KEEL_BASE_URL is the live server's own address (KEEL_PORT's derivation)
    with override_settings(KEEL_BASE_URL=live_server.url):
        call_command("seed_demo", stdout=out)

    # Then: every sandbox address points at it (the SOAP one at its SOAP route, the file insurer at its folders
    # under var/ — issue 11), the repair is printed and audited
    endpoints = dict(Insurer.objects.filter(code__startswith="sandbox-").values_list("code", "endpoint"))
    assert endpoints == {
        "sandbox-rest": f"{live_server.url}/sandbox/sandbox-rest",
        "sandbox-soap": f"{live_server.url}/sandbox/sandbox-soap/soap",
        "sandbox-file": "",
    }
    assert Insurer.objects.get(code="sandbox-file").outbound_folder == "insurers/sandbox-file/outbound"
    assert SandboxConfig.objects.get(code="sandbox-rest").callback_url == (
        f"{live_server.url}/api/v1/insurer-callbacks/sandbox-rest"
    )
    text = out.getvalue()
    assert f"http://127.0.0.1:8000/sandbox/sandbox-rest -> {live_server.url}/sandbox/sandbox-rest" in text
    assert f"Sandbox insurer sandbox-rest (rest) reached at {live_server.url}/sandbox/sandbox-rest" in text
    assert f"Sandbox insurer sandbox-soap (soap) reached at {live_server.url}/sandbox/sandbox-soap/soap" in text
    assert AuditEvent.objects.filter(action="insurer.sandbox_address_repaired").count() == 2
    # ... and an endorsement sent now reaches the sandbox over real HTTP on that port
    submission = EndorsementSubmission(
        endorsement_id=4242,
        idempotency_key="port-test-4242",
        kind="addition",
        policy_number="POL-PORT",
        effective_date=date(2026, 4, 1),
        member=MemberData("E-4242", "Asha", "Rao", date(1990, 5, 17), "female", "asha@example.com"),
        sum_insured=50_000_000,
        premium_amount=12_345,
        premium_direction="debit",
    )
    [result] = insurer_submit(insurer_code="sandbox-rest", submissions=[submission])
    assert result.outcome == "confirmed"

    # A second run on the same port changes nothing
    again = io.StringIO()
    with override_settings(KEEL_BASE_URL=live_server.url):
        call_command("seed_demo", stdout=again)
    assert "Repaired" not in again.getvalue()
    assert AuditEvent.objects.filter(action="insurer.sandbox_address_repaired").count() == 2
