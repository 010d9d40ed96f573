"""REST adapter: JSON over HTTP(S) with `requests`.

One request per batch: `POST {endpoint}/endorsements/batch` with `{"endorsements": [...]}`; every item
carries its own `idempotency_key`, and the request's `Idempotency-Key` header is the item's key for a batch
of one, else a digest of the items' keys (a retried batch has the same header). The insurer answers 200
with `{"results": [{idempotency_key, outcome, insurer_reference?, reason?}]}`.

Status handling: 2xx → per-item results; 400/409/422 → the insurer refused the request as such, every item is
rejected with the insurer's message, classified; anything else (timeouts, connection errors, 401/403/404,
408, 425, 429, 5xx, an unreadable body, a missing item) → `TransientInsurerError`, honouring `Retry-After`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests
import structlog

from apps.common.logging import current_correlation_id
from apps.insurers.classification import classify_insurer_error
from apps.insurers.conf import gateway_setting
from apps.insurers.contracts import (
    EndorsementSubmission,
    RejectionClass,
    SubmissionResult,
    TransientInsurerError,
)
from apps.insurers.gateways.base import ExchangeLog

log = structlog.get_logger(__name__)
PERMANENT_REQUEST_ERRORS = frozenset({400, 409, 422})
OPERATION = "endorsements.submit"

_session = requests.Session()
_session.headers.update({"User-Agent": "keel-insurer-gateway/1", "Accept": "application/json"})


def submission_to_json(submission: EndorsementSubmission) -> dict[str, Any]:
    member = submission.member
    return {
        "idempotency_key": submission.idempotency_key,
        "endorsement_id": submission.endorsement_id,
        "kind": submission.kind,
        "policy_number": submission.policy_number,
        "effective_date": submission.effective_date.isoformat(),
        "member": {
            "employee_code": member.employee_code,
            "first_name": member.first_name,
            "last_name": member.last_name,
            "date_of_birth": member.date_of_birth.isoformat(),
            "gender": member.gender,
            "email": member.email,
        },
        "sum_insured": submission.sum_insured,
        "premium_amount": submission.premium_amount,
        "premium_direction": submission.premium_direction,
    }


def batch_idempotency_key(submissions: Sequence[EndorsementSubmission]) -> str:
    if len(submissions) == 1:
        return submissions[0].idempotency_key
    digest = hashlib.sha256("\n".join(sorted(s.idempotency_key for s in submissions)).encode()).hexdigest()
    return f"batch-{digest}"


def parse_retry_after(value: str | None) -> float | None:
    """`Retry-After` as delta-seconds or an HTTP date → seconds from now (None if absent or unreadable)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def _problem_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason or f"HTTP {response.status_code}"
    if isinstance(body, dict):
        for field in ("detail", "message", "error", "title"):
            if isinstance(body.get(field), str):
                return str(body[field])[:500]
    return f"HTTP {response.status_code}"


class RestGateway:
    def __init__(
        self,
        *,
        insurer_code: str,
        endpoint: str,
        session: requests.Session | None = None,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> None:
        if not endpoint:
            raise ValueError(f"insurer {insurer_code!r} has no endpoint")
        self.insurer_code = insurer_code
        self.endpoint = endpoint.rstrip("/")
        self.session = session or _session
        self.timeout = (
            float(connect_timeout if connect_timeout is not None else gateway_setting("CONNECT_TIMEOUT_SECONDS")),
            float(read_timeout if read_timeout is not None else gateway_setting("READ_TIMEOUT_SECONDS")),
        )

    @property
    def batch_url(self) -> str:
        return f"{self.endpoint}/endorsements/batch"

    def submit(self, submissions: Sequence[EndorsementSubmission]) -> list[SubmissionResult]:
        if not submissions:
            return []
        body = {"endorsements": [submission_to_json(s) for s in submissions]}
        correlation_id = current_correlation_id()
        headers = {"Content-Type": "application/json", "Idempotency-Key": batch_idempotency_key(submissions)}
        if correlation_id:
            headers["X-Correlation-ID"] = correlation_id
        log = ExchangeLog(self.insurer_code, OPERATION, self.batch_url, body, submissions, correlation_id)
        record = log.record
        try:
            response = self.session.post(
                self.batch_url, data=json.dumps(body).encode(), headers=headers, timeout=self.timeout
            )
        except requests.Timeout as exc:
            record(None, None, f"timeout: {exc}")
            raise TransientInsurerError(f"insurer {self.insurer_code} timed out") from exc
        except requests.RequestException as exc:
            record(None, None, f"connection error: {exc}")
            raise TransientInsurerError(f"insurer {self.insurer_code} unreachable: {type(exc).__name__}") from exc

        status = response.status_code
        text = response.text
        if 200 <= status < 300:
            try:
                payload = response.json()
                results = self._parse_results(submissions, payload)
            except (ValueError, TypeError, KeyError) as exc:
                record(status, text, f"unreadable response: {exc}")
                raise TransientInsurerError(f"insurer {self.insurer_code} sent an unreadable response") from exc
            record(status, text, "")
            transient = [r for r in results if r.rejection_class == RejectionClass.TRANSIENT]
            if transient:
                # A per-item "try again later" is not a decision: retry the request (same keys; the insurer
                # returns the results it already decided).
                raise TransientInsurerError(
                    f"insurer {self.insurer_code} deferred {len(transient)} item(s): {transient[0].rejection_reason}"
                )
            return results

        message = _problem_message(response)
        record(status, text, message)
        if status in PERMANENT_REQUEST_ERRORS:
            rejection_class = classify_insurer_error(message)
            if rejection_class == RejectionClass.TRANSIENT:
                raise TransientInsurerError(f"insurer {self.insurer_code}: {message}")
            return [
                SubmissionResult(
                    endorsement_id=s.endorsement_id,
                    outcome="rejected",
                    rejection_class=rejection_class.value,
                    rejection_reason=message,
                )
                for s in submissions
            ]
        raise TransientInsurerError(
            f"insurer {self.insurer_code} answered HTTP {status}",
            retry_after=parse_retry_after(response.headers.get("Retry-After")),
        )

    @staticmethod
    def _parse_results(submissions: Sequence[EndorsementSubmission], payload: Any) -> list[SubmissionResult]:
        return results_from_items(submissions, payload["results"])


def results_from_items(submissions: Sequence[EndorsementSubmission], items: Any) -> list[SubmissionResult]:
    """The insurer's per-item answers `[{idempotency_key, outcome, insurer_reference?, reason?}]` → one
    `SubmissionResult` per submission, in the submissions' order (shared by the REST and SOAP adapters).

    Raises KeyError when an item is missing and ValueError on an unknown outcome (callers: transient)."""
    by_key = {str(item["idempotency_key"]): item for item in items}
    results: list[SubmissionResult] = []
    for submission in submissions:
        item = by_key[submission.idempotency_key]  # KeyError: the insurer skipped an item → transient
        outcome = item["outcome"]
        reference = item.get("insurer_reference") or None
        if outcome == "confirmed":
            results.append(
                SubmissionResult(
                    endorsement_id=submission.endorsement_id, outcome="confirmed", insurer_reference=reference
                )
            )
        elif outcome == "rejected":
            reason = str(item.get("reason") or item.get("rejection_reason") or "")[:500]
            results.append(
                SubmissionResult(
                    endorsement_id=submission.endorsement_id,
                    outcome="rejected",
                    insurer_reference=reference,
                    rejection_class=classify_insurer_error(reason).value,
                    rejection_reason=reason or "Rejected by the insurer without a reason.",
                )
            )
        elif outcome == "pending":
            results.append(
                SubmissionResult(
                    endorsement_id=submission.endorsement_id, outcome="pending", insurer_reference=reference
                )
            )
        else:
            raise ValueError(f"unknown outcome {outcome!r}")
    return results
