"""The first run as a new user meets it: a random demo key per install, SPEC test PANs left free."""

from __future__ import annotations

import io
import os
import stat

import pytest
from django.core.management import call_command
from django.test import override_settings

from apps.demo.management.commands.demo_key import key_file
from apps.loan_applications.models import LoanApplication
from apps.loan_applications.pan import blind_index
from apps.partners.models import APIKey

pytestmark = pytest.mark.django_db


@pytest.fixture
def var_dir(tmp_path):
    with override_settings(BASE_DIR=tmp_path):
        yield tmp_path


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("demo_key", *args, stdout=out)
    return out.getvalue().splitlines()[-1]


def test_demo_key_is_random_kept_per_install_and_make_key_replaces_it(var_dir, client):
    call_command("seed_demo", stdout=io.StringIO())
    first = run()
    assert first == run()  # the same install prints the same key
    assert stat.S_IMODE(os.stat(key_file()).st_mode) == 0o600
    assert client.get("/api/v1/employers", HTTP_AUTHORIZATION=f"Api-Key {first}").status_code == 200

    fresh = run("--fresh")
    assert fresh != first
    assert client.get("/api/v1/employers", HTTP_AUTHORIZATION=f"Api-Key {first}").status_code == 401
    assert client.get("/api/v1/employers", HTTP_AUTHORIZATION=f"Api-Key {fresh}").status_code == 200
    assert APIKey.objects.filter(name="demo key", revoked=False).count() == 1
    # Another install (another var/) gets another key: nothing derives it from shared settings.
    key_file().unlink()
    assert run() not in (first, fresh)


def test_seed_demo_prints_no_key_and_leaves_the_spec_test_pans_free(var_dir):
    out = io.StringIO()
    call_command("seed_demo", stdout=out)
    assert "Api-Key" not in out.getvalue()
    assert not APIKey.objects.exists()
    assert LoanApplication.objects.count() == 3
    for pan in ("ABCDE1234F", "FGHIJ5678K"):
        assert not LoanApplication.objects.filter(pan_blind_index=blind_index(pan)).exists()
