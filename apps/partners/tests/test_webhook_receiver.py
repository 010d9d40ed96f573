"""The local receiver (`manage.py webhook_listen`, tests, benchmark) refuses a webhook whose signature does not
verify — 400, as a receiver must — and accepts a verified one with 204."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import requests
from standardwebhooks.webhooks import Webhook

from apps.partners.webhooks.receiver import Receiver

SECRET = "whsec_" + base64.b64encode(b"k" * 32).decode()
OTHER = "whsec_" + base64.b64encode(b"o" * 32).decode()


def _post(receiver: Receiver, secret: str) -> requests.Response:
    body = '{"type": "ledger.topup_posted"}'
    sent_at = datetime.now(UTC)
    signature = Webhook(secret).sign("msg_1", sent_at, body)
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(int(sent_at.timestamp())),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }
    return requests.post(receiver.url, data=body, headers=headers, timeout=5)


def test_a_verified_webhook_is_204_and_a_bad_signature_400():
    with Receiver(secrets=[SECRET]) as receiver:
        good = _post(receiver, SECRET)
        bad = _post(receiver, OTHER)

    assert (good.status_code, good.content) == (204, b"")
    assert (bad.status_code, bad.text) == (400, "webhook signature did not verify\n")
    assert [r.verified for r in receiver.received] == [True, False]


def test_without_secrets_every_webhook_is_204_unverified():
    with Receiver() as receiver:
        response = _post(receiver, OTHER)

    assert response.status_code == 204
    assert [r.verified for r in receiver.received] == [None]
