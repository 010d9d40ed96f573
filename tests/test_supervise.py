"""`make run`'s supervisor (config/supervise.py): a dead process is restarted, a crash loop stops loudly."""

from __future__ import annotations

import re
import threading
import time

import pytest

from config import supervise


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    monkeypatch.setattr(supervise, "RESTART_PAUSE_SECONDS", 0.05)
    monkeypatch.setattr(supervise, "MAX_RESTARTS", 3)


def test_a_process_that_dies_is_restarted_and_the_others_are_left_alone(capsys):
    supervisor = supervise.Supervisor({"flaky": "sh -c 'sleep 0.3; exit 9'", "steady": "sleep 30"})
    runner = threading.Thread(target=supervisor.run, daemon=True)
    runner.start()
    time.sleep(0.5)
    steady_pid = supervisor.processes["steady"].pid
    deadline = time.monotonic() + 10
    while len(supervisor.deaths["flaky"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    supervisor.stop_all()
    runner.join(15)

    out = capsys.readouterr().out
    assert out.count("flaky exited with 9; restarting it") >= 2
    assert supervisor.processes["steady"].pid == steady_pid
    assert not supervisor.deaths["steady"]
    assert supervisor.processes["steady"].poll() is not None  # stopped with everything else


def test_a_crash_looping_process_stops_everything_and_exits_1(capsys):
    supervisor = supervise.Supervisor({"broken": "sh -c 'exit 3'", "steady": "sleep 30"})

    started = time.monotonic()
    code = supervisor.run()

    assert code == 1
    assert time.monotonic() - started < 15
    assert supervisor.processes["steady"].poll() is not None
    captured = capsys.readouterr()
    assert "broken died 4 times" in captured.out
    assert "make run: broken keeps dying (exit 3)" in captured.err


def test_the_procfile_runs_beat_as_its_own_process_never_inside_a_worker():
    from pathlib import Path

    from honcho.environ import parse_procfile

    processes = parse_procfile((Path(__file__).parents[1] / "config" / "Procfile").read_text()).processes
    # `key` prints the demo key under `make run` only (issue 14); the drills and compose run the others: the
    # production worker layout (docs/architecture.md, ADR 0060).
    assert set(processes) == {"web", "worker", "loans", "beat", "relay", "webhooks", "key"}
    assert processes["beat"].startswith("celery -A config beat")
    assert " -B" not in processes["worker"]
    assert "--beat" not in processes["worker"]


def test_compose_runs_the_procfile_commands_and_restarts_every_long_lived_service():
    """The drills run the Procfile; compose must run the same workers, relay, webhook dispatcher and beat,
    supervised — every Procfile process but web (compose serves it with the image's gunicorn) and key."""
    from pathlib import Path

    import yaml
    from honcho.environ import parse_procfile

    root = Path(__file__).parents[1]
    procfile = parse_procfile((root / "config" / "Procfile").read_text()).processes
    compose = yaml.safe_load((root / "docker-compose.yml").read_text())
    services = compose["services"]

    assert set(procfile) - {"web", "key"} == {"worker", "loans", "beat", "relay", "webhooks"}
    for name in set(procfile) - {"web", "key"}:
        # A Procfile default (`${KEEL_WORKER_LOG_LEVEL:-INFO}`) is what runs where the variable is unset.
        expanded = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", procfile[name])
        assert " ".join(services[name]["command"]) == expanded, name
    for name, service in services.items():
        expected = "no" if name == "migrate" else "unless-stopped"
        assert service.get("restart") == expected, name


def test_the_two_workers_split_the_queues_between_them():
    """The production worker layout (ADR 0060): the loan steps' queues on `loans`, every other queue on `worker`
    — each queue consumed, none by both."""
    from pathlib import Path

    from django.conf import settings
    from honcho.environ import parse_procfile

    processes = parse_procfile((Path(__file__).parents[1] / "config" / "Procfile").read_text()).processes

    def option(command: str, name: str) -> set[str]:
        found = re.search(rf"{name} (\S+)", command)
        return set(found.group(1).split(",")) if found else set()

    loans = option(processes["loans"], "--queues")
    excluded = option(processes["worker"], "--exclude-queues")
    assert loans == excluded == {"scoring", "decisions"}
    assert not option(processes["worker"], "--queues")  # every other queue, including ones added later
    assert loans <= set(settings.KEEL_QUEUES)
    for name in ("worker", "loans"):
        assert "--pool threads --concurrency 4" in processes[name], name
    # Two distinct node names (a second `keel@%h` on one host would clash with the first).
    assert "--hostname loans@%h" in processes["loans"]
    assert "--hostname keel@%h" in processes["worker"]
