"""`keel_insurer_calls_total` / `keel_insurer_call_seconds` are recorded by `guarded_call` with the right
outcome: ok, error (the call was made and raised — also the call that trips the breaker), circuit_open
(refused without calling out)."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from apps.insurers.contracts import InsurerCallDeferred, TransientInsurerError
from apps.insurers.resilience import circuit_reset, circuit_state, guarded_call

INSURER = "metrics-insurer"


def calls(outcome: str) -> float:
    return REGISTRY.get_sample_value("keel_insurer_calls_total", {"insurer": INSURER, "outcome": outcome}) or 0.0


def seconds_count(outcome: str) -> float:
    value = REGISTRY.get_sample_value("keel_insurer_call_seconds_count", {"insurer": INSURER, "outcome": outcome})
    return value or 0.0


@pytest.fixture
def closed_circuit():
    circuit_reset(INSURER)
    yield
    circuit_reset(INSURER)


def test_ok_error_and_circuit_open_are_counted_and_timed(closed_circuit, settings):
    settings.INSURER_GATEWAY = {**settings.INSURER_GATEWAY, "CIRCUIT_FAIL_MAX": 2, "CIRCUIT_RESET_SECONDS": 60}
    before = {o: (calls(o), seconds_count(o)) for o in ("ok", "error", "circuit_open")}
    sent: list[int] = []

    def failing() -> None:
        sent.append(1)
        raise TransientInsurerError("503 from the insurer")

    assert guarded_call(INSURER, lambda: "answered") == "answered"
    for _ in range(2):  # the second failure trips the breaker: still a call made, an error
        with pytest.raises(TransientInsurerError):
            guarded_call(INSURER, failing)
    assert circuit_state(INSURER)["state"] == "open"
    with pytest.raises(InsurerCallDeferred):
        guarded_call(INSURER, failing)
    assert len(sent) == 2  # the refused call never went out

    after = {o: (calls(o), seconds_count(o)) for o in ("ok", "error", "circuit_open")}
    assert {o: (after[o][0] - before[o][0], after[o][1] - before[o][1]) for o in after} == {
        "ok": (1, 1),
        "error": (2, 2),
        "circuit_open": (1, 1),
    }
