"""Which webhook URLs Keel will call, checked at registration and again at every delivery (SPEC §10).

Rules (ADR 0030):
- `https` only, no credentials in the URL, a host name or address, port 1–65535.
- Every address the host resolves to must be public (`ipaddress.is_global`, not multicast): private,
  loopback, link-local (which includes the 169.254.169.254 metadata address), shared (100.64/10), reserved,
  unspecified and IPv6 unique-local (fd00:ec2::254) addresses are refused, IPv4-mapped IPv6 included.
- `settings.WEBHOOKS_ALLOW_LOCAL_HTTP` (True only in `config.settings.local`) also allows `http` and loopback
  targets, for a developer's `manage.py webhook_listen`. Production settings force it off.

At delivery the sender resolves the host once through `resolve`, checks every address, and connects to the
first one — the address that was checked — keeping the URL's host for the `Host` header, TLS SNI and
certificate verification. Redirects are never followed. Tests replace `resolve` (a resolver stub).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

Resolver = Callable[[str, int], list[str]]


class UnsafeURL(ValueError):
    """The URL or an address it resolves to is not allowed; `str()` says why (safe to show the partner)."""


def system_resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (A and AAAA), in the resolver's order."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


# Replaced in tests (a stub) — module attribute so the sender always looks it up here.
resolve: Resolver = system_resolve


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str  # as written in the URL (Host header, SNI)
    port: int
    path: str  # path + query
    address: str  # the checked IP to connect to (empty until resolved)


def _allow_local() -> bool:
    return bool(getattr(settings, "WEBHOOKS_ALLOW_LOCAL_HTTP", False))


def address_allowed(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_global and not ip.is_multicast:
        return True
    return _allow_local() and ip.is_loopback


def parse(url: str) -> Target:
    """Check the URL's shape (not its addresses). Raises `UnsafeURL`."""
    if not isinstance(url, str) or not url or len(url) > 2000:
        raise UnsafeURL("Enter a URL of at most 2000 characters.")
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        raise UnsafeURL("The URL may not contain spaces or control characters.")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"Not a valid URL: {exc}.") from exc
    scheme = parts.scheme.lower()
    allowed_schemes = ("https", "http") if _allow_local() else ("https",)
    if scheme not in allowed_schemes:
        allowed = "https (or http to this machine, in local settings)" if _allow_local() else "https"
        raise UnsafeURL(f"The URL must use {allowed}.")
    if parts.username or parts.password:
        raise UnsafeURL("The URL may not contain credentials.")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise UnsafeURL("The URL has no host.")
    if parts.fragment:
        raise UnsafeURL("The URL may not contain a fragment.")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(scheme=scheme, host=host, port=port or (443 if scheme == "https" else 80), path=path, address="")


def check(url: str, *, resolver: Resolver | None = None) -> Target:
    """Parse `url`, resolve its host and check every address; returns the target pinned to the first one.

    Raises `UnsafeURL` for a refused shape or address, or a name that does not resolve. An `http` URL is
    allowed only to loopback, and only with `WEBHOOKS_ALLOW_LOCAL_HTTP`.
    """
    target = parse(url)
    try:
        literal = ipaddress.ip_address(target.host.strip("[]"))
        addresses = [str(literal)]
    except ValueError:
        lookup = resolver or resolve
        try:
            addresses = lookup(target.host, target.port)
        except (OSError, UnicodeError) as exc:
            raise UnsafeURL(f"The host {target.host!r} does not resolve.") from exc
    if not addresses:
        raise UnsafeURL(f"The host {target.host!r} does not resolve.")
    for address in addresses:
        if not address_allowed(address):
            raise UnsafeURL(f"The host {target.host!r} resolves to a private or reserved address; refused.")
    if target.scheme == "http" and not all(ipaddress.ip_address(a.split("%", 1)[0]).is_loopback for a in addresses):
        raise UnsafeURL("The URL must use https (http is allowed only to this machine in local settings).")
    return Target(scheme=target.scheme, host=target.host, port=target.port, path=target.path, address=addresses[0])
