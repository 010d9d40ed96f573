"""Replacing WEBHOOK_SECRETS_KEY: NEW,OLD keys (the first seals, every one opens) and `webhook_secrets_reseal`
(ADR 0042, 0046)."""

from __future__ import annotations

import base64
import hashlib
from io import StringIO

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import CommandError, call_command
from standardwebhooks.webhooks import Webhook

from apps.audit.models import AuditEvent
from apps.common.secretbox import SealedValueError, unseal
from apps.partners.tests.factories import PartnerFactory
from apps.partners.tests.webhook_helpers import endpoint_for, record
from apps.partners.webhooks.dispatch import dispatch_once
from apps.partners.webhooks.models import WebhookSecret
from apps.partners.webhooks.receiver import Receiver
from apps.partners.webhooks.secrets import secret_open, secret_seal, secrets_reseal

pytestmark = pytest.mark.django_db


def key(name: str) -> str:
    return base64.b64encode(hashlib.sha256(name.encode()).digest()).decode()


OLD, NEW = key("old"), key("new")


def raw(k: str) -> bytes:
    return base64.b64decode(k)


@pytest.fixture(autouse=True)
def _local_receivers(settings):
    settings.WEBHOOKS_ALLOW_LOCAL_HTTP = True


def test_the_first_key_seals_and_every_listed_key_opens(settings):
    settings.WEBHOOK_SECRETS_KEY = OLD
    sealed_old = secret_seal("whsec_a", endpoint_id=7)
    settings.WEBHOOK_SECRETS_KEY = f"{NEW}, {OLD}"
    sealed_new = secret_seal("whsec_b", endpoint_id=7)
    assert secret_open(sealed_old, endpoint_id=7) == "whsec_a"
    assert secret_open(sealed_new, endpoint_id=7) == "whsec_b"
    assert unseal(sealed_new, key=raw(NEW), context="keel:webhook-secret:7") == b"whsec_b"
    with pytest.raises(SealedValueError):
        unseal(sealed_new, key=raw(OLD), context="keel:webhook-secret:7")
    settings.WEBHOOK_SECRETS_KEY = NEW  # the old key dropped: what it sealed no longer opens
    with pytest.raises(SealedValueError):
        secret_open(sealed_old, endpoint_id=7)


def test_a_bad_entry_in_the_list_is_named(settings):
    settings.WEBHOOK_SECRETS_KEY = f"{NEW},not-base64!"
    with pytest.raises(ImproperlyConfigured, match=r"^WEBHOOK_SECRETS_KEY \(entry 2\) is not valid base64$"):
        secret_seal("whsec_a", endpoint_id=1)
    settings.WEBHOOK_SECRETS_KEY = f"{NEW},{base64.b64encode(b'short').decode()}"
    with pytest.raises(ImproperlyConfigured, match=r"^WEBHOOK_SECRETS_KEY \(entry 2\) must decode to 32 bytes"):
        secret_seal("whsec_a", endpoint_id=1)


def test_deliveries_are_signed_during_a_key_change_and_reseal_moves_every_row_to_the_new_key(settings):
    settings.WEBHOOK_SECRETS_KEY = OLD
    partner = PartnerFactory()
    with Receiver() as receiver:
        first, first_secret = endpoint_for(partner.pk, receiver.url)
        second, second_secret = endpoint_for(partner.pk, receiver.url)
        before = dict(WebhookSecret.objects.values_list("pk", "secret"))
        settings.WEBHOOK_SECRETS_KEY = f"{NEW},{OLD}"
        record(partner.pk, object_id="during")
        assert dispatch_once() == 2  # old-key rows still open and sign
        assert WebhookSecret.objects.filter(pk__in=before).count() == 2
        assert dict(WebhookSecret.objects.values_list("pk", "secret")) == before  # sending changes nothing

        out = StringIO()
        call_command("webhook_secrets_reseal", "--batch-size", "1", stdout=out)
        assert out.getvalue() == "Re-sealed 2 secret(s); 0 already under the newest key; 0 unreadable.\n"
        after = dict(WebhookSecret.objects.values_list("pk", "secret"))
        assert set(after) == set(before)
        assert all(after[pk] != before[pk] for pk in before)
        for pk, endpoint_id in WebhookSecret.objects.values_list("pk", "endpoint_id"):
            plain = unseal(after[pk], key=raw(NEW), context=f"keel:webhook-secret:{endpoint_id}").decode()
            assert plain == {first.pk: first_secret, second.pk: second_secret}[endpoint_id]
        audits = list(AuditEvent.objects.filter(action="webhook_secrets.resealed").values_list("after", flat=True))
        assert len(audits) == 2  # one per batch that changed rows (batch size 1)
        assert all("whsec_" not in str(a) for a in audits)

        assert secrets_reseal() == {"resealed": 0, "current": 2, "unreadable": 0}  # idempotent
        settings.WEBHOOK_SECRETS_KEY = NEW  # the old key can go now
        record(partner.pk, object_id="after")
        assert dispatch_once() == 2
    bodies = [(r.path, r.body, r.headers) for r in receiver.received]
    assert len(bodies) == 4
    for _path, body, headers in bodies:
        verified = 0
        for secret in (first_secret, second_secret):
            try:
                Webhook(secret).verify(body, headers)
                verified += 1
            except Exception:
                continue
        assert verified == 1


def test_reseal_leaves_an_unreadable_row_and_fails_loudly(settings):
    settings.WEBHOOK_SECRETS_KEY = OLD
    partner = PartnerFactory()
    endpoint, _ = endpoint_for(partner.pk, "http://127.0.0.1:9/hook")
    stored = WebhookSecret.objects.get(endpoint=endpoint).secret
    settings.WEBHOOK_SECRETS_KEY = NEW  # the old key dropped too early
    with pytest.raises(CommandError, match=r"^1 secret\(s\) open with no configured key"):
        call_command("webhook_secrets_reseal", stdout=StringIO())
    assert WebhookSecret.objects.get(endpoint=endpoint).secret == stored
    assert not AuditEvent.objects.filter(action="webhook_secrets.resealed").exists()
