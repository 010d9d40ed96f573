"""SOAP adapter: SOAP 1.1 document/literal with zeep, against Keel's versioned WSDL
(`apps/insurers/wsdl/keel-endorsements-v1.wsdl`, ADR 0027).

One call per batch: `SubmitEndorsements` with one `endorsement` element per submission, each carrying its own
`idempotencyKey` (stable across retries). The insurer's endpoint (`Insurer.endpoint`) is the service address;
the WSDL is read from the repository, never fetched from the insurer, so a misconfigured endpoint cannot make
Keel load a foreign document.

Outcome handling mirrors the REST adapter (ADR 0011): a `SubmitEndorsementsResponse` → per-item results; a
SOAP `Client` fault → the insurer refused the request as such, every item rejected with the classified fault
message; a `Server` fault, a non-200 status without a Client fault, a timeout (connect / read from
`INSURER_GATEWAY`), a connection error, unreadable XML, a missing item or a per-item "try again" →
`TransientInsurerError`, honouring `Retry-After`. Every exchange is written to the insurer-exchange log with
bodies redacted (the request is logged as its JSON equivalent so the audit app's field redaction applies).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import requests
import zeep
import zeep.exceptions
from lxml import etree
from zeep.transports import Transport

from apps.common.logging import current_correlation_id
from apps.insurers.classification import classify_insurer_error
from apps.insurers.conf import gateway_setting
from apps.insurers.contracts import (
    EndorsementSubmission,
    InsurerConfigurationError,
    RejectionClass,
    SubmissionResult,
    TransientInsurerError,
)
from apps.insurers.gateways.base import ExchangeLog
from apps.insurers.gateways.rest import parse_retry_after, results_from_items, submission_to_json

WSDL_PATH = Path(__file__).resolve().parent.parent / "wsdl" / "keel-endorsements-v1.wsdl"
NAMESPACE = "urn:keel:insurer:endorsements:v1"
BINDING = f"{{{NAMESPACE}}}EndorsementsBinding"
OPERATION = "endorsements.submit"


class RecordingTransport(Transport):  # type: ignore[misc]
    """zeep's transport, remembering the last HTTP response of this thread (status and `Retry-After` are
    not on zeep's exceptions)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.last = threading.local()

    def post(self, address: str, message: Any, headers: dict[str, str]) -> requests.Response:
        self.last.response = None
        response = super().post(address, message, headers)
        self.last.response = response
        return response


@lru_cache(maxsize=8)
def soap_client(connect_timeout: float, read_timeout: float) -> tuple[zeep.Client, RecordingTransport]:
    """One parsed WSDL per process and timeout pair (parsing costs ~10 ms; zeep clients are reusable), with its
    transport. Used by the submit gateway and by reconciliation's roster pull (the same v1 WSDL)."""
    session = requests.Session()
    session.headers.update({"User-Agent": "keel-insurer-gateway/1"})
    transport = RecordingTransport(
        session=session, timeout=connect_timeout, operation_timeout=(connect_timeout, read_timeout)
    )
    settings = zeep.Settings(strict=True, xml_huge_tree=False, forbid_dtd=True, forbid_entities=True)
    return zeep.Client(wsdl=str(WSDL_PATH), transport=transport, settings=settings), transport


def _to_soap(submission: EndorsementSubmission) -> dict[str, Any]:
    member = submission.member
    return {
        "idempotencyKey": submission.idempotency_key,
        "endorsementId": submission.endorsement_id,
        "kind": submission.kind,
        "policyNumber": submission.policy_number,
        "effectiveDate": submission.effective_date,
        "member": {
            "employeeCode": member.employee_code,
            "firstName": member.first_name,
            "lastName": member.last_name,
            "dateOfBirth": member.date_of_birth,
            "gender": member.gender,
            "email": member.email,
        },
        "sumInsured": submission.sum_insured,
        "premiumAmount": submission.premium_amount,
        "premiumDirection": submission.premium_direction,
    }


def _items_from(response: Any) -> list[dict[str, Any]]:
    """zeep's parsed `SubmitEndorsementsResponse` → the adapter-neutral item dicts."""
    items = []
    for result in response or []:
        items.append(
            {
                "idempotency_key": result["idempotencyKey"],
                "outcome": result["outcome"],
                "insurer_reference": result["insurerReference"],
                "reason": result["reason"],
            }
        )
    return items


class SoapGateway:
    def __init__(
        self,
        *,
        insurer_code: str,
        endpoint: str,
        connect_timeout: float | None = None,
        read_timeout: float | None = None,
    ) -> None:
        if not endpoint or not endpoint.startswith(("http://", "https://")):
            raise InsurerConfigurationError(
                f"Insurer {insurer_code!r} (SOAP) has no valid service address: set its endpoint to an http(s) URL."
            )
        self.insurer_code = insurer_code
        self.endpoint = endpoint
        self.client, self.transport = soap_client(
            float(connect_timeout if connect_timeout is not None else gateway_setting("CONNECT_TIMEOUT_SECONDS")),
            float(read_timeout if read_timeout is not None else gateway_setting("READ_TIMEOUT_SECONDS")),
        )
        self.service = self.client.create_service(BINDING, endpoint)

    # long: one SOAP exchange and its one log record on every path; the except ladder is the classification
    # table (timeout, connection, fault, unusable, unreadable, deferred) and reads best in one place.
    def submit(self, submissions: Sequence[EndorsementSubmission]) -> list[SubmissionResult]:
        if not submissions:
            return []
        logged_request = {"endorsements": [submission_to_json(s) for s in submissions]}
        correlation_id = current_correlation_id()

        def last_status() -> tuple[int | None, float | None]:
            response = getattr(self.transport.last, "response", None)
            if response is None:
                return None, None
            return response.status_code, parse_retry_after(response.headers.get("Retry-After"))

        log = ExchangeLog(self.insurer_code, OPERATION, self.endpoint, logged_request, submissions, correlation_id)
        record = log.record
        headers = {"X-Correlation-ID": correlation_id} if correlation_id else {}
        try:
            with self.client.settings(extra_http_headers=headers):
                answer = self.service.SubmitEndorsements(endorsement=[_to_soap(s) for s in submissions])
        except requests.Timeout as exc:
            record(None, None, f"timeout: {exc}")
            raise TransientInsurerError(f"insurer {self.insurer_code} timed out") from exc
        except requests.RequestException as exc:
            record(None, None, f"connection error: {exc}")
            raise TransientInsurerError(f"insurer {self.insurer_code} unreachable: {type(exc).__name__}") from exc
        except zeep.exceptions.Fault as fault:
            status, retry_after = last_status()
            message = str(fault.message or "SOAP fault")[:500]
            code = str(fault.code or "")
            record(status, {"fault": {"code": code, "message": message}}, message)
            if code.endswith("Client") and classify_insurer_error(message) != RejectionClass.TRANSIENT:
                rejection_class = classify_insurer_error(message)
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
                f"insurer {self.insurer_code} answered a SOAP fault ({code or 'no code'}, HTTP {status}): {message}",
                retry_after=retry_after,
            ) from fault
        except (zeep.exceptions.Error, etree.XMLSyntaxError, ValueError) as exc:
            status, retry_after = last_status()
            record(status, None, f"{type(exc).__name__}: {exc}"[:500])
            raise TransientInsurerError(
                f"insurer {self.insurer_code} answered HTTP {status} without a usable SOAP response",
                retry_after=retry_after,
            ) from exc

        status, _ = last_status()
        try:
            items = _items_from(answer)
            results = results_from_items(submissions, items)
        except (KeyError, TypeError, ValueError) as exc:
            record(status, {"results": _safe_items(answer)}, f"unreadable response: {exc}")
            raise TransientInsurerError(f"insurer {self.insurer_code} sent an unreadable response") from exc
        record(status, {"results": items}, "")
        transient = [r for r in results if r.rejection_class == RejectionClass.TRANSIENT]
        if transient:
            raise TransientInsurerError(
                f"insurer {self.insurer_code} deferred {len(transient)} item(s): {transient[0].rejection_reason}"
            )
        return results


def _safe_items(answer: Any) -> Any:
    try:
        return _items_from(answer)
    except (KeyError, TypeError, ValueError):
        return None
