"""`make demo` next to a running `make run` (issue 11, item 2): the demo points the sandbox insurers at its own
temporary server while it runs and puts every address back when it ends, so `make run` keeps sending to
itself, not to the demo's dead port."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from apps.audit.models import AuditEvent
from apps.endorsements.models import Endorsement, EndorsementStatus
from apps.insurers.models import Insurer
from apps.insurers.sandbox.models import SandboxConfig
from apps.insurers.sandbox.setup import sandbox_register, sandbox_registered_temporarily

CODES = ("sandbox-rest", "sandbox-soap", "sandbox-file")
RUNNING = "http://127.0.0.1:8000"  # where `make run` registered them


def _addresses() -> dict[str, tuple[str, str, str, str]]:
    callbacks = dict(SandboxConfig.objects.values_list("code", "callback_url"))
    return {
        i.code: (i.endpoint, i.outbound_folder, i.inbound_folder, callbacks[i.code])
        for i in Insurer.objects.filter(code__in=CODES)
    }


@pytest.mark.django_db
def test_a_temporary_registration_puts_every_address_back_even_when_the_block_fails() -> None:
    sandbox_register(base_url=RUNNING, codes=CODES)
    before = _addresses()

    with pytest.raises(RuntimeError), sandbox_registered_temporarily(base_url="http://127.0.0.1:42439", codes=CODES):
        during = _addresses()
        raise RuntimeError("the demo crashed")

    assert during["sandbox-rest"] == (
        "http://127.0.0.1:42439/sandbox/sandbox-rest",
        "",
        "",
        "http://127.0.0.1:42439/api/v1/insurer-callbacks/sandbox-rest",
    )
    assert during["sandbox-soap"][0] == "http://127.0.0.1:42439/sandbox/sandbox-soap/soap"
    assert _addresses() == before
    assert before["sandbox-rest"][0] == f"{RUNNING}/sandbox/sandbox-rest"
    restored = AuditEvent.objects.filter(action="insurer.sandbox_address_repaired").order_by("id")
    assert [(e.before["endpoint"], e.after["endpoint"]) for e in restored] == [
        ("http://127.0.0.1:42439/sandbox/sandbox-rest", f"{RUNNING}/sandbox/sandbox-rest"),
        ("http://127.0.0.1:42439/sandbox/sandbox-soap/soap", f"{RUNNING}/sandbox/sandbox-soap/soap"),
    ]  # sandbox-file has no endpoint: its folders did not move, so nothing to put back


@pytest.mark.django_db(transaction=True)
def test_make_demo_leaves_the_sandbox_where_make_run_registered_it(require_postgres, tmp_path, settings) -> None:
    settings.VAR_DIR = tmp_path
    sandbox_register(base_url=RUNNING, codes=CODES)
    before = _addresses()
    out = io.StringIO()

    call_command("demo", stdout=out)

    assert _addresses() == before
    # The demo itself reached its insurers over its own server: one employer per protocol went ACTIVE.
    text = out.getvalue()
    for code, protocol in zip(CODES, ("rest", "soap", "file"), strict=True):
        assert f"   {code} ({protocol}): ACTIVE\n" in text, text
    assert Endorsement.objects.filter(status=EndorsementStatus.ACTIVE).count() > 0
