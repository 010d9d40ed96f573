"""SSRF: webhook URLs are refused at registration and at delivery for private, loopback, link-local and
metadata targets — by literal address, by DNS (resolver stub) and by redirect; http only to loopback in local
settings. No traffic leaves loopback (SPEC §10, §12)."""

from __future__ import annotations

import pytest

from apps.common.errors import DomainValidationError
from apps.partners.tests.factories import PartnerFactory
from apps.partners.tests.webhook_helpers import endpoint_for, record, resolver_stub
from apps.partners.webhooks import urlpolicy
from apps.partners.webhooks.dispatch import dispatch_once
from apps.partners.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from apps.partners.webhooks.receiver import Receiver

pytestmark = pytest.mark.django_db

REFUSED_ADDRESSES = [
    "127.0.0.1",  # loopback
    "127.8.9.10",
    "10.1.2.3",  # private
    "172.16.0.9",
    "192.168.1.1",
    "169.254.169.254",  # link-local: cloud metadata
    "169.254.0.1",
    "100.64.0.1",  # shared (CGNAT)
    "0.0.0.0",  # unspecified
    "224.0.0.1",  # multicast
    "240.0.0.1",  # reserved
    "::1",
    "fe80::1",  # IPv6 link-local
    "fd00:ec2::254",  # AWS IPv6 metadata (unique-local)
    "::ffff:127.0.0.1",  # IPv4-mapped loopback
    "::ffff:169.254.169.254",
]
PUBLIC = "93.184.215.14"


@pytest.mark.parametrize("address", REFUSED_ADDRESSES)
def test_registration_refuses_a_private_address_resolved_by_dns(address):
    partner = PartnerFactory()
    with resolver_stub({"hooks.partner.example": [PUBLIC, address]}):
        with pytest.raises(DomainValidationError) as caught:
            endpoint_for(partner.pk, "https://hooks.partner.example/in")
    assert set(caught.value.errors) == {"url"}
    assert WebhookEndpoint.objects.count() == 0


@pytest.mark.parametrize("address", [a for a in REFUSED_ADDRESSES if ":" not in a])
def test_registration_refuses_a_literal_private_address(address):
    partner = PartnerFactory()
    with pytest.raises(DomainValidationError):
        endpoint_for(partner.pk, f"https://{address}/in")
    assert WebhookEndpoint.objects.count() == 0


@pytest.mark.parametrize(
    "url",
    [
        "http://hooks.partner.example/in",  # http in production
        "ftp://hooks.partner.example/in",
        "https://user:pw@hooks.partner.example/in",
        "https:///nohost",
        "https://hooks.partner.example/in#frag",
        "https://hooks.partner.example/in put",
        "https://unknown.example/in",  # does not resolve
        "https://hooks.partner.example:99999/in",
        "",
    ],
)
def test_registration_refuses_bad_shapes(url):
    partner = PartnerFactory()
    with resolver_stub({"hooks.partner.example": [PUBLIC]}):
        with pytest.raises(DomainValidationError) as caught:
            endpoint_for(partner.pk, url)
    assert set(caught.value.errors) == {"url"}


def test_production_rules_accept_a_public_https_url():
    partner = PartnerFactory()
    with resolver_stub({"hooks.partner.example": [PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c"]}):
        endpoint, secret = endpoint_for(partner.pk, "https://hooks.partner.example/in")
    assert endpoint.url == "https://hooks.partner.example/in"
    assert secret.startswith("whsec_")


def test_local_settings_allow_http_to_loopback_only(settings):
    settings.WEBHOOKS_ALLOW_LOCAL_HTTP = True
    assert urlpolicy.check("http://127.0.0.1:8170/hooks").address == "127.0.0.1"
    with resolver_stub({"lan.example": ["192.168.1.5"], "pub.example": [PUBLIC]}):
        for url in ("http://lan.example/x", "http://10.0.0.1/x", "http://169.254.169.254/latest/meta-data"):
            with pytest.raises(urlpolicy.UnsafeURL):
                urlpolicy.check(url)
        with pytest.raises(urlpolicy.UnsafeURL, match="https"):
            urlpolicy.check("http://pub.example/x")  # http only to this machine


def test_production_settings_never_allow_local_http():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[3] / "config" / "settings" / "production.py").read_text()
    assert "WEBHOOKS_ALLOW_LOCAL_HTTP = False" in text
    base = (Path(__file__).resolve().parents[3] / "config" / "settings" / "base.py").read_text()
    assert "WEBHOOKS_ALLOW_LOCAL_HTTP = False" in base


@pytest.mark.parametrize("address", ["127.0.0.1", "169.254.169.254", "10.0.0.7", "::1"])
def test_delivery_refuses_a_name_that_later_resolves_to_a_private_address(address):
    # Given an endpoint registered while its name resolved to a public address
    partner = PartnerFactory()
    with resolver_stub({"hooks.partner.example": [PUBLIC]}):
        endpoint, _ = endpoint_for(partner.pk, "https://hooks.partner.example/in")
    event = record(partner.pk)
    # When the name now resolves to a private one (DNS rebinding) and the dispatcher runs
    with resolver_stub({"hooks.partner.example": [address]}) as looked_up:
        dispatch_once()
    # Then no connection was made: the attempt is recorded as refused, the delivery waits to retry
    assert looked_up == ["hooks.partner.example"]
    [attempt] = WebhookAttempt.objects.filter(endpoint=endpoint)
    assert (attempt.status_code, attempt.succeeded, attempt.event_public_id) == (None, False, event.public_id)
    assert attempt.error.startswith("refused: ")
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert (delivery.status, delivery.attempts) == ("pending", 1)


def test_delivery_connects_to_the_checked_address_keeping_the_host(settings):
    settings.WEBHOOKS_ALLOW_LOCAL_HTTP = True
    partner = PartnerFactory()
    with Receiver() as receiver, resolver_stub({"hooks.partner.test": ["127.0.0.1"]}):
        endpoint_for(partner.pk, f"http://hooks.partner.test:{receiver.port}/in?x=1")
        record(partner.pk)
        assert dispatch_once() == 1
    [request] = receiver.received
    assert request.headers["host"] == f"hooks.partner.test:{receiver.port}"
    assert request.path == "/in?x=1"


def test_delivery_does_not_follow_a_redirect_to_metadata(settings):
    settings.WEBHOOKS_ALLOW_LOCAL_HTTP = True
    partner = PartnerFactory()

    def redirect(_item):
        return 307, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""

    with Receiver(respond=redirect) as receiver:
        endpoint, _ = endpoint_for(partner.pk, receiver.url)
        record(partner.pk)
        dispatch_once()
    assert len(receiver.received) == 1
    [attempt] = WebhookAttempt.objects.filter(endpoint=endpoint)
    assert (attempt.status_code, attempt.succeeded, attempt.error) == (307, False, "redirect not followed")
    assert WebhookDelivery.objects.get(endpoint=endpoint).status == "pending"
