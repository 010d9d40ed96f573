"""Signed callbacks from the sandbox insurer (mode "callback"), delivered from background threads.

Each delivery is one Standard Webhooks request (`{"events": [...]}`) with a `webhook-id` that stays the same
across its retries, retried a bounded number of times with backoff. `wait_for_callbacks()` lets tests (and
the benchmark) wait until every delivery started so far has finished.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import requests
import standardwebhooks
import structlog
from django.db import connection
from django.utils import timezone

from apps.insurers.sandbox.models import SandboxApplied

log = structlog.get_logger(__name__)
MAX_ATTEMPTS = 5
BACKOFF_SECONDS = 0.2

_threads: set[threading.Thread] = set()
_threads_lock = threading.Lock()


def build_events(rows: Sequence[SandboxApplied]) -> list[dict[str, object]]:
    events: list[dict[str, object]] = []
    for row in rows:
        data: dict[str, object] = {"idempotency_key": row.idempotency_key, "insurer_reference": row.insurer_reference}
        if row.endorsement_id:  # 0: no Keel endorsement (a reconciliation resend) — nothing to echo
            data["endorsement_id"] = row.endorsement_id
        if row.outcome == "rejected":
            data["reason"] = row.rejection_reason
        events.append({"type": f"endorsement.{row.outcome}", "data": data})
    return events


def sign_headers(*, secret: str, msg_id: str, body: str, at: datetime | None = None) -> dict[str, str]:
    at = at or datetime.now(UTC)
    signature = standardwebhooks.Webhook(secret).sign(msg_id, at, body)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "Content-Type": "application/json",
    }


def deliver(*, url: str, secret: str, row_ids: Sequence[int]) -> bool:
    """Deliver the results of `row_ids` in one signed request; True once the receiver answered 2xx."""
    rows = list(SandboxApplied.objects.filter(pk__in=row_ids, callback_delivered_at__isnull=True).order_by("id"))
    if not rows:
        return True
    body = json.dumps({"events": build_events(rows)})
    msg_id = f"msg_{uuid.uuid4().hex}"
    for attempt in range(MAX_ATTEMPTS):
        try:
            response = requests.post(
                url, data=body.encode(), headers=sign_headers(secret=secret, msg_id=msg_id, body=body), timeout=(3, 10)
            )
        except requests.RequestException as exc:
            log.info("sandbox.callback_error", attempt=attempt, error=type(exc).__name__)
        else:
            if 200 <= response.status_code < 300:
                SandboxApplied.objects.filter(pk__in=[r.pk for r in rows]).update(callback_delivered_at=timezone.now())
                return True
            if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
                log.warning("sandbox.callback_refused", status=response.status_code)
                return False
        time.sleep(BACKOFF_SECONDS * 2**attempt)
    log.warning("sandbox.callback_gave_up", rows=len(rows))
    return False


def _run(url: str, secret: str, row_ids: list[int]) -> None:
    try:
        deliver(url=url, secret=secret, row_ids=row_ids)
    except Exception:
        log.exception("sandbox.callback_crashed")
    finally:
        connection.close()
        with _threads_lock:
            _threads.discard(threading.current_thread())


def schedule_callbacks(*, url: str, secret: str, row_ids: Sequence[int]) -> None:
    thread = threading.Thread(target=_run, args=(url, secret, list(row_ids)), daemon=True, name="sandbox-callback")
    with _threads_lock:
        _threads.add(thread)
    thread.start()


def wait_for_callbacks(timeout: float = 10.0) -> bool:
    """Block until every callback thread started so far has finished; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        with _threads_lock:
            pending = list(_threads)
        if not pending:
            return True
        for thread in pending:
            thread.join(max(deadline - time.monotonic(), 0))
        if time.monotonic() >= deadline:
            with _threads_lock:
                return not _threads
