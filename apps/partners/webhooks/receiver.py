"""A small webhook receiver on this machine: `manage.py webhook_listen`, the tests and the benchmark use it.

It verifies each request with the Standard Webhooks library (`Webhook.verify`, independent of Keel's
signing code) when given secrets, records it, and answers what `respond` says (default: 204, or 400 when a
signature does not verify).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


@dataclass(frozen=True, slots=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool | None  # None: no secret to verify with

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def webhook_id(self) -> str:
        return self.headers.get("webhook-id", "")


# (status, headers, body) for a request; the default is `_default_answer`.
Responder = Callable[[Received], tuple[int, dict[str, str], bytes]]


def _default_answer(item: Received) -> tuple[int, dict[str, str], bytes]:
    """204 for a verified (or, without secrets, unverified) webhook; 400 when the signature does not verify, as
    a receiver must refuse it (Standard Webhooks) — Keel then retries and, in the end, dead-letters it."""
    if item.verified is False:
        return 400, {"Content-Type": "text/plain; charset=utf-8"}, b"webhook signature did not verify\n"
    return 204, {}, b""


class Receiver:
    """`with Receiver() as r: … r.url … r.received` — a threaded HTTP/1.1 server on 127.0.0.1:`port`."""

    def __init__(
        self,
        *,
        port: int = 0,
        secrets: list[str] | None = None,
        respond: Responder | None = None,
        on_request: Callable[[Received], None] | None = None,
        keep: bool = True,
    ) -> None:
        self.secrets = list(secrets or [])
        self.respond = respond
        self.on_request = on_request
        self.keep = keep
        self.received: list[Received] = []
        self.count = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                verified: bool | None = None
                if receiver.secrets:
                    verified = False
                    for secret in receiver.secrets:
                        try:
                            Webhook(secret).verify(body, headers)
                            verified = True
                            break
                        except WebhookVerificationError:
                            continue
                item = Received(path=self.path, headers=headers, body=body, verified=verified)
                with receiver._lock:
                    receiver.count += 1
                    if receiver.keep:
                        receiver.received.append(item)
                if receiver.on_request is not None:
                    receiver.on_request(item)
                status, extra, payload = receiver.respond(item) if receiver.respond else _default_answer(item)
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if payload:
                    self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}/hooks"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
