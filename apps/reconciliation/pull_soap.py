"""Pulling an insurer's roster and statement over SOAP (issue 12, ADR 0045): the `GetRoster` and
`GetStatement` operations of Keel's versioned WSDL (`apps/insurers/wsdl/keel-endorsements-v1.wsdl`, the one
the SOAP gateway submits endorsements with), called with zeep, one keyset page per call.

I/O only, no database. A `Server` fault, HTTP 429/5xx, a timeout or a connection error is transient and
retried by `pull.with_retries` (honouring `Retry-After`); a `Client` fault or an unreadable answer fails the
pull. The WSDL is read from the repository, never fetched from the insurer.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import requests
import zeep
import zeep.exceptions
from lxml import etree

from apps.insurers.gateways.rest import parse_retry_after
from apps.insurers.gateways.soap import BINDING, soap_client
from apps.reconciliation.pull import (
    TRANSIENT_STATUSES,
    PullPolicy,
    RosterPage,
    RosterPullError,
    TransientPullError,
    member_from_insurer,
    with_retries,
)


def _call(
    *, endpoint: str, operation: str, request: dict[str, Any], policy: PullPolicy, sleep: Callable[[float], None]
) -> Any:
    """One operation's parsed answer, with bounded retries."""
    client, transport = soap_client(policy.connect_timeout, policy.read_timeout)
    service = client.create_service(BINDING, endpoint)

    def attempt() -> Any:
        try:
            return getattr(service, operation)(**request)
        except (requests.Timeout, requests.ConnectionError) as exc:
            raise TransientPullError(f"{type(exc).__name__}: {exc}") from exc
        except zeep.exceptions.Fault as fault:
            response = getattr(transport.last, "response", None)
            status = response.status_code if response is not None else None
            retry_after = parse_retry_after(response.headers.get("Retry-After")) if response is not None else None
            message = f"SOAP fault {fault.code or ''} (HTTP {status}): {fault.message}"
            if str(fault.code or "").endswith("Client"):
                raise RosterPullError(f"insurer refused: {message}") from fault
            raise TransientPullError(message, retry_after=retry_after) from fault
        except zeep.exceptions.TransportError as exc:
            if exc.status_code in TRANSIENT_STATUSES:
                raise TransientPullError(f"HTTP {exc.status_code}") from exc
            raise RosterPullError(f"insurer refused: HTTP {exc.status_code}") from exc
        except (zeep.exceptions.Error, etree.XMLSyntaxError, ValueError) as exc:
            raise RosterPullError(f"unreadable SOAP answer: {type(exc).__name__}: {exc}") from exc

    return with_retries(attempt, policy=policy, sleep=sleep)


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def soap_roster_pages(
    *,
    endpoint: str,
    policy_number: str,
    cursor: str = "",
    page_size: int = 1000,
    sleep: Callable[[float], None] = time.sleep,
    policy: PullPolicy | None = None,
) -> Iterator[RosterPage]:
    """Yield the roster of `policy_number` page by page from `cursor` (`GetRoster`), like
    `pull.rest_roster_pages`. Raises `RosterPullError`."""
    policy = policy or PullPolicy()
    while True:
        request: dict[str, Any] = {"policyNumber": policy_number, "limit": page_size}
        if cursor:
            request["cursor"] = cursor
        answer = _call(endpoint=endpoint, operation="GetRoster", request=request, policy=policy, sleep=sleep)
        try:
            members = [
                member_from_insurer(
                    {
                        "employee_code": m["employeeCode"],
                        "first_name": m["firstName"],
                        "last_name": m["lastName"],
                        "date_of_birth": _iso(m["dateOfBirth"]),
                        "sum_insured": m["sumInsured"],
                        "start_date": _iso(m["startDate"]),
                        "gender": m["gender"],
                    }
                )
                for m in answer["member"] or []
            ]
            page = RosterPage(
                members=members,
                next_cursor=answer["nextCursor"] or None,
                page=int(answer["page"]),
                total=int(answer["total"]) if answer["total"] is not None else None,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RosterPullError(f"unreadable roster page: {exc}") from exc
        yield page
        if not page.next_cursor:
            return
        cursor = page.next_cursor


def soap_statement_charges(
    *,
    endpoint: str,
    policy_number: str,
    page_size: int = 1000,
    sleep: Callable[[float], None] = time.sleep,
    policy: PullPolicy | None = None,
) -> Iterator[tuple[int, int]]:
    """Yield the statement of charges of `policy_number` as `(endorsement_id, amount)` (paise) in id order
    (`GetStatement`), like `pull.rest_statement_charges`. Raises `RosterPullError`."""
    policy = policy or PullPolicy()
    cursor = ""
    while True:
        request: dict[str, Any] = {"policyNumber": policy_number, "limit": page_size}
        if cursor:
            request["cursor"] = cursor
        answer = _call(endpoint=endpoint, operation="GetStatement", request=request, policy=policy, sleep=sleep)
        try:
            charges = [(int(c["endorsementId"]), int(c["amount"])) for c in answer["charge"] or []]
        except (ValueError, KeyError, TypeError) as exc:
            raise RosterPullError(f"unreadable statement page: {exc}") from exc
        yield from charges
        cursor = answer["nextCursor"] or ""
        if not cursor:
            return
