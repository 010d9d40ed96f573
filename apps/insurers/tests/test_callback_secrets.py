"""Insurer callback signing secrets are sealed at rest, opened only to verify or sign, shown masked (ADR 0044)."""

from __future__ import annotations

import importlib
import json

import pytest
from django.apps import apps as django_apps
from rest_framework.test import APIClient

from apps.audit.models import AuditEvent, InsurerExchangeEvent
from apps.common.secretbox import is_sealed
from apps.insurers.callback_secrets import (
    MASK,
    CallbackSecretError,
    callback_secret_mask,
    callback_secret_open,
    callback_secret_seal,
)
from apps.insurers.models import Insurer
from apps.insurers.sandbox.callbacks import sign_headers
from apps.insurers.sandbox.models import SandboxConfig
from apps.insurers.sandbox.setup import generate_callback_secret, sandbox_register

pytestmark = pytest.mark.django_db
SEALING = importlib.import_module("apps.insurers.migrations.0006_callback_secrets_sealed")


def _signed_post(code: str, secret: str, body: dict | None = None):
    raw = json.dumps(body or {"type": "endorsement.confirmed", "data": {"idempotency_key": "nobody"}})
    signed = sign_headers(secret=secret, msg_id="msg_sealed", body=raw)
    signed.pop("Content-Type")
    extra = {f"HTTP_{k.upper().replace('-', '_')}": v for k, v in signed.items()}
    return APIClient().post(f"/api/v1/insurer-callbacks/{code}", data=raw, content_type="application/json", **extra)


def test_sealed_secret_round_trips_and_is_bound_to_its_insurer_and_column() -> None:
    secret = generate_callback_secret()
    stored = callback_secret_seal(secret, insurer_code="acme")

    assert is_sealed(stored)
    assert secret not in stored
    assert secret[len("whsec_") :] not in stored
    assert callback_secret_open(stored, insurer_code="acme") == secret
    assert stored != callback_secret_seal(secret, insurer_code="acme")  # a fresh nonce each time
    for code, owner in (("other", "insurer"), ("acme", "sandbox")):
        with pytest.raises(CallbackSecretError, match="cannot be opened") as caught:
            callback_secret_open(stored, insurer_code=code, owner=owner)  # type: ignore[arg-type]
        assert secret not in str(caught.value)
    with pytest.raises(CallbackSecretError, match="not sealed"):
        callback_secret_open(secret, insurer_code="acme")
    assert callback_secret_open("", insurer_code="acme") == ""
    assert callback_secret_seal("", insurer_code="acme") == ""


def test_registered_sandbox_stores_no_plaintext_and_its_signed_callback_verifies() -> None:
    (insurer,) = sandbox_register(base_url="http://127.0.0.1:1")
    config = SandboxConfig.objects.get(code=insurer.code)
    secret = callback_secret_open(insurer.callback_secret, insurer_code=insurer.code)

    assert secret.startswith("whsec_")
    assert secret not in insurer.callback_secret
    assert secret not in config.callback_secret
    assert callback_secret_open(config.callback_secret, insurer_code=insurer.code, owner="sandbox") == secret
    response = _signed_post(insurer.code, secret)
    assert response.status_code == 200, response.content
    assert response.json()["results"][0]["status"] == 404  # verified; the item names nothing we sent
    wrong = _signed_post(insurer.code, generate_callback_secret())
    assert wrong.status_code == 401


def test_a_plaintext_or_tampered_stored_secret_is_refused_401_and_never_echoed() -> None:
    secret = generate_callback_secret()
    Insurer.objects.create(code="plain-life", name="Plain", protocol="rest", callback_secret=secret)
    sealed = callback_secret_seal(secret, insurer_code="tamper-life")
    Insurer.objects.create(code="tamper-life", name="Tamper", protocol="rest", callback_secret=sealed[:-6] + "AAAAAA")

    for code in ("plain-life", "tamper-life"):
        response = _signed_post(code, secret)

        assert response.status_code == 401
        assert response["Content-Type"] == "application/problem+json"
        assert secret not in response.content.decode()
    logged = InsurerExchangeEvent.objects.filter(direction="inbound").values_list("error", flat=True)
    assert sorted(logged) == ["callback secret cannot be opened", "callback secret cannot be opened"]


def test_migration_seals_plaintext_rows_once_and_reverses() -> None:
    secret, already = generate_callback_secret(), generate_callback_secret()
    Insurer.objects.create(code="old-life", name="Old", protocol="rest", callback_secret=secret)
    kept = callback_secret_seal(already, insurer_code="new-life")
    Insurer.objects.create(code="new-life", name="New", protocol="rest", callback_secret=kept)
    Insurer.objects.create(code="none-life", name="None", protocol="rest", callback_secret="")
    SandboxConfig.objects.create(code="old-life", callback_secret=secret)

    SEALING.seal_existing(django_apps, None)

    stored = dict(Insurer.objects.values_list("code", "callback_secret"))
    assert secret not in stored["old-life"]
    assert callback_secret_open(stored["old-life"], insurer_code="old-life") == secret
    assert stored["new-life"] == kept  # already sealed: untouched
    assert stored["none-life"] == ""
    config = SandboxConfig.objects.get(code="old-life").callback_secret
    assert callback_secret_open(config, insurer_code="old-life", owner="sandbox") == secret

    SEALING.open_existing(django_apps, None)

    assert dict(Insurer.objects.values_list("code", "callback_secret")) == {
        "old-life": secret,
        "new-life": already,
        "none-life": "",
    }
    assert SandboxConfig.objects.get(code="old-life").callback_secret == secret


def test_admin_shows_a_mask_and_replaces_the_secret_sealed_and_audited(admin_client) -> None:
    (insurer,) = sandbox_register(base_url="http://127.0.0.1:1")
    old = callback_secret_open(insurer.callback_secret, insurer_code=insurer.code)
    url = f"/admin/insurers/insurer/{insurer.pk}/change/"

    page = admin_client.get(url).content.decode()

    assert MASK in page
    assert old not in page
    assert insurer.callback_secret not in page  # not even the sealed form
    config_page = admin_client.get(f"/admin/insurers/sandboxconfig/{SandboxConfig.objects.get().pk}/change/")
    assert MASK in config_page.content.decode()
    assert old not in config_page.content.decode()

    new = generate_callback_secret()
    form = {
        "code": insurer.code,
        "name": insurer.name,
        "protocol": insurer.protocol,
        "endpoint": insurer.endpoint,
        "outbound_folder": "",
        "inbound_folder": "",
        "rate_limit_per_minute": 600,
        "batch_size": 100,
        "batch_window_seconds": 5,
        "is_active": "on",
        "new_callback_secret": new,
    }
    response = admin_client.post(url, form)

    assert response.status_code == 302, response.content[:2000]
    insurer.refresh_from_db()
    assert new not in insurer.callback_secret
    assert callback_secret_open(insurer.callback_secret, insurer_code=insurer.code) == new
    config = SandboxConfig.objects.get(code=insurer.code)
    assert callback_secret_open(config.callback_secret, insurer_code=insurer.code, owner="sandbox") == new
    event = AuditEvent.objects.get(action="insurer.callback_secret_set")
    assert (event.before, event.after) == (
        {"callback_secret_state": "set"},
        {"callback_secret_state": "replaced"},
    )
    assert _signed_post(insurer.code, new).status_code == 200
    assert _signed_post(insurer.code, old).status_code == 401

    bad = admin_client.post(url, {**form, "new_callback_secret": "whsec_not base64!"})
    assert bad.status_code == 200
    assert "Expected a whsec_ secret" in bad.content.decode()
    assert Insurer.objects.get(pk=insurer.pk).callback_secret == insurer.callback_secret


def test_mask_never_shows_the_secret() -> None:
    secret = generate_callback_secret()
    stored = callback_secret_seal(secret, insurer_code="acme")

    assert callback_secret_mask(stored, insurer_code="acme") == MASK
    assert callback_secret_mask("", insurer_code="acme") == "—"
    assert secret not in callback_secret_mask(secret, insurer_code="acme")
    assert "cannot be opened" in callback_secret_mask(stored, insurer_code="other")
