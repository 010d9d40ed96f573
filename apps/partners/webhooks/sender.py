"""Sending one signed webhook request to a checked address (SPEC §10, Standard Webhooks, ADR 0030).

`send(url, body, headers)`:
1. `urlpolicy.check(url)` resolves the host and checks every address; an unsafe one is refused before any
   connection.
2. urllib3 connects to the **checked address** (`HTTP(S)ConnectionPool(host=<ip>)`) while the request keeps
   the URL's host in `Host`, and TLS keeps it for SNI and certificate verification (`server_hostname`,
   `assert_hostname`). A later DNS change cannot redirect a connection that was checked.
3. Redirects are not followed (a 3xx is a failed attempt); connect/read timeouts and an overall deadline
   bound the call; at most `WEBHOOKS["RESPONSE_MAX_BYTES"]` of the answer are read.
Pools are kept per (scheme, address, port, host) so keep-alive connections are reused between deliveries.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import urllib3
from django.conf import settings
from standardwebhooks.webhooks import Webhook

from apps.partners.webhooks import urlpolicy


@dataclass(frozen=True, slots=True)
class SendResult:
    status_code: int | None
    latency_ms: int
    excerpt: str
    error: str

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def sign_headers(*, msg_id: str, body: str, secrets: list[str], at: datetime | None = None) -> dict[str, str]:
    """Standard Webhooks headers: `webhook-id`, `webhook-timestamp` (Unix seconds) and one `v1,` signature per
    secret, space-separated (every active secret signs, so a receiver holding either verifies)."""
    at = at or datetime.now(tz=UTC)
    signatures = " ".join(Webhook(secret).sign(msg_id=msg_id, timestamp=at, data=body) for secret in secrets)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signatures,
    }


_pools: dict[tuple[str, str, int, str], urllib3.HTTPConnectionPool] = {}
_pools_lock = threading.Lock()


def _pool(target: urlpolicy.Target) -> urllib3.HTTPConnectionPool:
    key = (target.scheme, target.address, target.port, target.host)
    # As many keep-alive connections as the dispatcher has threads: endpoints on one host (one pool) are sent to
    # at once without opening and discarding a connection per request.
    size = max(4, int(settings.WEBHOOKS["DISPATCH_THREADS"]))
    with _pools_lock:
        pool = _pools.get(key)
        if pool is None:
            if target.scheme == "https":
                pool = urllib3.HTTPSConnectionPool(
                    host=target.address,
                    port=target.port,
                    server_hostname=target.host,
                    assert_hostname=target.host,
                    cert_reqs="CERT_REQUIRED",
                    maxsize=size,
                    block=False,
                    retries=False,
                )
            else:
                pool = urllib3.HTTPConnectionPool(
                    host=target.address, port=target.port, maxsize=size, block=False, retries=False
                )
            if len(_pools) > 1000:
                for old in _pools.values():
                    old.close()
                _pools.clear()
            _pools[key] = pool
        return pool


def target_check(url: str) -> urlpolicy.Target | SendResult:
    """Step 1 alone: the checked target of `url`, or the refused attempt's result. The dispatcher checks an
    endpoint's URL once per run (a batch of its due deliveries) and sends the batch to that checked address."""
    try:
        return urlpolicy.check(url)
    except urlpolicy.UnsafeURL as exc:
        return SendResult(None, 0, "", f"refused: {exc}"[:500])


def send(*, url: str, body: bytes, headers: dict[str, str], target: urlpolicy.Target | None = None) -> SendResult:
    """POST `body` to `url` as described above; with `target` (from `target_check(url)`, just before) the
    address check is not repeated. Never raises for a network or policy failure: the result's `error` says what
    happened (status_code None), so every attempt can be recorded."""
    conf = settings.WEBHOOKS
    started = time.monotonic()
    if target is None:
        checked = target_check(url)
        if isinstance(checked, SendResult):
            return checked
        target = checked
    host_header = target.host if ":" not in target.host else f"[{target.host}]"
    default_port = 443 if target.scheme == "https" else 80
    if target.port != default_port:
        host_header = f"{host_header}:{target.port}"
    request_headers = {
        "Host": host_header,
        "Content-Type": "application/json",
        "User-Agent": "Keel-Webhooks/1",
        **headers,
    }
    cap = int(conf["RESPONSE_MAX_BYTES"])
    try:
        response = _pool(target).urlopen(
            "POST",
            target.path,
            body=body,
            headers=request_headers,
            redirect=False,
            retries=False,
            timeout=urllib3.Timeout(connect=conf["CONNECT_TIMEOUT_SECONDS"], read=conf["READ_TIMEOUT_SECONDS"]),
            preload_content=False,
            assert_same_host=False,
        )
        try:
            content = b""
            deadline = started + float(conf["TOTAL_TIMEOUT_SECONDS"])
            while len(content) <= cap:
                chunk = response.read(min(16384, cap + 1 - len(content)))
                if not chunk:
                    break
                content += chunk
                if time.monotonic() > deadline:
                    break
            status = int(response.status)
        finally:
            if len(content) <= cap:
                response.release_conn()
            else:  # more than the cap: drop the connection rather than read the rest
                response.close()
    except Exception as exc:  # every network failure is an attempt's outcome, never an exception to callers
        latency = int((time.monotonic() - started) * 1000)
        return SendResult(None, latency, "", f"{type(exc).__name__}: {exc}"[:500])
    latency = int((time.monotonic() - started) * 1000)
    excerpt = content[:1000].decode("utf-8", errors="replace")
    error = "" if 200 <= status < 300 else ("redirect not followed" if 300 <= status < 400 else f"HTTP {status}")
    return SendResult(status, latency, excerpt, error)
