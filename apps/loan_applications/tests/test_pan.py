"""PAN protection (SPEC §9, docs/adr/0009): encryption, blind index, rotation, PII access log."""

from __future__ import annotations

import base64
import uuid

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command

from apps.audit.models import PiiAccessEvent
from apps.common.actors import Actor
from apps.loan_applications import pan as pan_crypto
from apps.loan_applications.models import LoanApplication
from apps.loan_applications.services import (
    DuplicateLoanApplication,
    pan_decrypt_for,
    pan_masked_for,
)
from apps.loan_applications.tests.factories import create_application

KEY1 = base64.b64encode(b"1" * 32).decode()
KEY2 = base64.b64encode(b"2" * 32).decode()
BLIND = base64.b64encode(b"b" * 32).decode()


@pytest.fixture
def two_keys(settings):
    settings.PAN_ENCRYPTION_KEYS = f"1:{KEY1},2:{KEY2}"
    settings.PAN_BLIND_INDEX_KEY = BLIND
    settings.PAN_ACTIVE_KEY_VERSION = 1
    return settings


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("ABCDE1234F", True),
        ("ZZZZZ0001Z", True),
        ("ABCDE0000F", False),  # serial 0000 is never issued
        ("abcde1234f", False),
        ("ABCD1234F", False),
        ("ABCDE12345", False),
        ("ABCDE1234FG", False),
        ("1BCDE1234F", False),
        ("ABCDE 1234F", False),
        ("", False),
    ],
)
def test_pan_validation(value, valid):
    assert (pan_crypto.pan_validation_error(value) is None) is valid


def test_mask_shows_only_the_last_five_characters():
    assert pan_crypto.mask_pan("ABCDE1234F") == "XXXXX1234F"


def test_encrypt_uses_a_fresh_nonce_and_round_trips():
    application_id = uuid.uuid4()
    one, version = pan_crypto.encrypt_pan("ABCDE1234F", application_id=application_id)
    two, _ = pan_crypto.encrypt_pan("ABCDE1234F", application_id=application_id)

    assert one != two
    assert b"ABCDE1234F" not in one
    assert len(one) == 12 + 10 + 16
    assert pan_crypto.decrypt_pan(one, key_version=version, application_id=application_id) == "ABCDE1234F"


def test_tampered_ciphertext_fails_to_decrypt():
    application_id = uuid.uuid4()
    blob, version = pan_crypto.encrypt_pan("ABCDE1234F", application_id=application_id)
    for position in (0, 12, len(blob) - 1):  # nonce, ciphertext, tag
        tampered = bytearray(blob)
        tampered[position] ^= 0x01
        with pytest.raises(pan_crypto.PanDecryptionError, match="failed authentication"):
            pan_crypto.decrypt_pan(bytes(tampered), key_version=version, application_id=application_id)
    with pytest.raises(pan_crypto.PanDecryptionError, match="truncated"):
        pan_crypto.decrypt_pan(blob[:20], key_version=version, application_id=application_id)


def test_ciphertext_moved_to_another_application_fails_to_decrypt():
    blob, version = pan_crypto.encrypt_pan("ABCDE1234F", application_id=uuid.uuid4())

    with pytest.raises(pan_crypto.PanDecryptionError):
        pan_crypto.decrypt_pan(blob, key_version=version, application_id=uuid.uuid4())


def test_unknown_key_version_fails_clearly():
    application_id = uuid.uuid4()
    blob, _ = pan_crypto.encrypt_pan("ABCDE1234F", application_id=application_id)

    with pytest.raises(pan_crypto.PanDecryptionError, match="version 9 is not configured"):
        pan_crypto.decrypt_pan(blob, key_version=9, application_id=application_id)


def test_blind_index_is_keyed_and_deterministic(two_keys):
    index = pan_crypto.blind_index("ABCDE1234F")
    assert index == pan_crypto.blind_index("ABCDE1234F")
    assert index != pan_crypto.blind_index("ABCDE1234G")
    assert len(index) == 64
    import hashlib

    assert index != hashlib.sha256(b"ABCDE1234F").hexdigest()
    two_keys.PAN_BLIND_INDEX_KEY = KEY2
    assert pan_crypto.blind_index("ABCDE1234F") != index


def test_configured_key_ring_is_parsed(two_keys):
    ring = pan_crypto.key_ring()
    assert set(ring.keys) == {1, 2}
    assert ring.active_version == 1
    assert ring.keys[2] == b"2" * 32


@pytest.mark.parametrize(
    ("keys", "active", "message"),
    [
        ("1:not-base64!", None, "not valid base64"),
        (f"1:{base64.b64encode(b'short').decode()}", None, "must decode to 32 bytes"),
        (f"1:{KEY1}", 2, "is not in PAN_ENCRYPTION_KEYS"),
        ("nonsense", None, "look like"),
    ],
)
def test_bad_key_configuration_is_refused(settings, keys, active, message):
    settings.PAN_ENCRYPTION_KEYS = keys
    settings.PAN_BLIND_INDEX_KEY = BLIND
    settings.PAN_ACTIVE_KEY_VERSION = active
    with pytest.raises(ImproperlyConfigured, match=message):
        pan_crypto.key_ring()


def test_production_without_keys_refuses_to_encrypt(settings, monkeypatch):
    settings.PAN_ENCRYPTION_KEYS = None
    settings.PAN_BLIND_INDEX_KEY = None
    settings.DEBUG = False
    settings.SETTINGS_MODULE = "config.settings.production"
    monkeypatch.delenv("PAN_ENCRYPTION_KEYS", raising=False)
    monkeypatch.delenv("PAN_BLIND_INDEX_KEY", raising=False)
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "config.settings.production")
    with pytest.raises(ImproperlyConfigured, match="must be set"):
        pan_crypto.key_ring()


@pytest.mark.django_db
def test_stored_application_holds_no_plaintext_and_decrypts_with_its_id(partner):
    application = create_application(partner=partner, pan="KLMNP4321Q")
    row = LoanApplication.objects.get(pk=application.pk)

    assert b"KLMNP4321Q" not in bytes(row.pan_ciphertext)
    assert row.pan_blind_index == pan_crypto.blind_index("KLMNP4321Q")
    assert pan_decrypt_for(application=row, actor=Actor.system("tests"), purpose="test") == "KLMNP4321Q"


@pytest.mark.django_db
def test_every_decrypt_and_mask_is_in_the_pii_access_log(partner):
    application = create_application(partner=partner, pan="KLMNP4321Q")
    actor = Actor.operator(user_id=7, username="ops-anita")

    assert pan_masked_for(application=application, actor=actor, purpose="support call") == "XXXXX4321Q"
    pan_decrypt_for(application=application, actor=Actor.system("scoring"), purpose="credit bureau soft pull")

    events = list(PiiAccessEvent.objects.order_by("id").values("actor", "subject_id", "field", "action", "purpose"))
    assert events == [
        {"actor": "user:ops-anita", "subject_id": str(application.pk), "field": "pan", "action": "mask",
         "purpose": "support call"},
        {"actor": "system:scoring", "subject_id": str(application.pk), "field": "pan", "action": "decrypt",
         "purpose": "credit bureau soft pull"},
    ]  # fmt: skip


@pytest.mark.django_db
def test_rotation_reencrypts_under_the_active_key_and_duplicates_are_still_found(two_keys, partner, capsys):
    old = [create_application(partner=partner, pan=f"ROTAT{i:04d}E") for i in range(1, 6)]
    before = {a.pk: bytes(LoanApplication.objects.get(pk=a.pk).pan_ciphertext) for a in old}
    assert set(LoanApplication.objects.values_list("pan_key_version", flat=True)) == {1}

    two_keys.PAN_ACTIVE_KEY_VERSION = 2
    call_command("rotate_pan_key", "--batch-size", "2")

    output = capsys.readouterr().out
    assert "5 application(s) to re-encrypt" in output
    assert "batch 3: re-encrypted 5/5" in output
    assert "Re-encrypted 5 PAN(s) under version 2; 0 remaining." in output
    actor = Actor.system("tests")
    for application in old:
        row = LoanApplication.objects.get(pk=application.pk)
        assert row.pan_key_version == 2
        assert bytes(row.pan_ciphertext) != before[row.pk]
        assert pan_decrypt_for(application=row, actor=actor, purpose="test") == application_pan(application)
    with pytest.raises(DuplicateLoanApplication) as excinfo:
        create_application(partner=partner, pan="ROTAT0003E")
    assert excinfo.value.existing_id == old[2].pk
    rotation_decrypts = PiiAccessEvent.objects.filter(actor="system:rotate_pan_key", action="decrypt")
    assert rotation_decrypts.count() == 5


def application_pan(application) -> str:
    return pan_crypto.decrypt_pan(
        LoanApplication.objects.get(pk=application.pk).pan_ciphertext,
        key_version=LoanApplication.objects.get(pk=application.pk).pan_key_version,
        application_id=application.pk,
    )


@pytest.mark.django_db
def test_old_key_version_stays_readable_until_rotated(two_keys, partner):
    application = create_application(partner=partner, pan="OLDKY1234E")
    two_keys.PAN_ACTIVE_KEY_VERSION = 2
    newer = create_application(partner=partner, pan="NEWKY1234E")

    assert LoanApplication.objects.get(pk=application.pk).pan_key_version == 1
    assert LoanApplication.objects.get(pk=newer.pk).pan_key_version == 2
    assert application_pan(application) == "OLDKY1234E"
    assert application_pan(newer) == "NEWKY1234E"


@pytest.mark.django_db
def test_rotation_reports_rows_that_do_not_decrypt_and_rotates_the_rest(two_keys, partner, capsys):
    good = create_application(partner=partner, pan="GOODP1234E")
    bad = create_application(partner=partner, pan="BADPN1234E")
    blob = bytearray(bytes(LoanApplication.objects.get(pk=bad.pk).pan_ciphertext))
    blob[-1] ^= 0xFF
    LoanApplication.objects.filter(pk=bad.pk).update(pan_ciphertext=bytes(blob))
    two_keys.PAN_ACTIVE_KEY_VERSION = 2

    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="1 PAN"):
        call_command("rotate_pan_key", "--batch-size", "10")

    assert LoanApplication.objects.get(pk=good.pk).pan_key_version == 2
    assert LoanApplication.objects.get(pk=bad.pk).pan_key_version == 1
    assert str(bad.pk) in capsys.readouterr().err
