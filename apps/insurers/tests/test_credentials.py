"""Insurer credentials are encrypted at rest and shown masked (SPEC §5, ADR 0029)."""

from __future__ import annotations

import json

import pytest

from apps.audit.models import AuditEvent
from apps.insurers.credentials import CredentialsError, decrypt_credentials, encrypt_credentials
from apps.insurers.models import Insurer
from apps.insurers.sandbox.setup import sandbox_register

pytestmark = pytest.mark.django_db
SECRET = "pa55-word-only-the-insurer-knows"
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


def test_credentials_round_trip_and_are_bound_to_their_insurer() -> None:
    stored = encrypt_credentials({"sftp_password": SECRET}, insurer_code="acme")

    assert stored.startswith("v1:")
    assert SECRET not in stored
    assert decrypt_credentials(stored, insurer_code="acme") == {"sftp_password": SECRET}
    assert stored != encrypt_credentials({"sftp_password": SECRET}, insurer_code="acme")  # fresh nonce
    with pytest.raises(CredentialsError, match="cannot be decrypted") as caught:
        decrypt_credentials(stored, insurer_code="other")
    assert SECRET not in str(caught.value)
    tampered = stored[:-4] + ("AAAA" if not stored.endswith("AAAA") else "BBBB")
    with pytest.raises(CredentialsError):
        decrypt_credentials(tampered, insurer_code="acme")
    with pytest.raises(CredentialsError, match="not encrypted by Keel"):
        decrypt_credentials('{"sftp_password": "plain"}', insurer_code="acme")
    assert decrypt_credentials("", insurer_code="acme") == {}


def test_admin_stores_new_credentials_encrypted_and_shows_them_masked(admin_client) -> None:
    (insurer,) = sandbox_register(base_url="http://127.0.0.1:1", codes=("sandbox-file",))
    url = f"/admin/insurers/insurer/{insurer.pk}/change/"
    form = {
        "code": insurer.code,
        "name": insurer.name,
        "protocol": insurer.protocol,
        "endpoint": "",
        "outbound_folder": insurer.outbound_folder,
        "inbound_folder": insurer.inbound_folder,
        "rate_limit_per_minute": 600,
        "batch_size": 100,
        "batch_window_seconds": 5,
        "is_active": "on",
        "new_credentials": json.dumps({"sftp_password": SECRET, "sftp_host_key": HOST_KEY}),
    }

    response = admin_client.post(url, form)

    assert response.status_code == 302, response.content[:2000]
    insurer.refresh_from_db()
    assert SECRET not in insurer.credentials
    assert decrypt_credentials(insurer.credentials, insurer_code=insurer.code)["sftp_password"] == SECRET
    page = admin_client.get(url).content.decode()
    assert SECRET not in page
    assert HOST_KEY.split()[1] not in page
    assert "sftp_password: •••• (32 chars)" in page
    assert "sftp_host_key: ssh-ed25519 ••••" in page
    event = AuditEvent.objects.get(action="insurer.credentials_set")
    assert event.after == {"credential_names": ["sftp_host_key", "sftp_password"]}
    assert SECRET not in json.dumps([event.before, event.after])

    bad = admin_client.post(url, {**form, "new_credentials": "[1, 2]"})
    assert bad.status_code == 200
    assert "Expected a JSON object of strings." in bad.content.decode()
    assert Insurer.objects.get(pk=insurer.pk).credentials == insurer.credentials
