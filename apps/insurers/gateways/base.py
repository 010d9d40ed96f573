from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from apps.insurers.contracts import (
    EndorsementSubmission,
    InsurerConfigurationError,
    ProtocolNotSupportedError,
    SubmissionResult,
)

if TYPE_CHECKING:
    from apps.insurers.models import Insurer


class InsurerGateway(Protocol):
    """Sends endorsements to one insurer. Implementations do the protocol's I/O and its exchange logging;
    rate limiting and the circuit breaker wrap them in `services.insurer_submit`.

    `submit` returns one result per submission, in the submissions' order, or raises
    `TransientInsurerError` when nothing can be said about any of them (retry later, same keys).
    """

    def submit(self, submissions: Sequence[EndorsementSubmission]) -> list[SubmissionResult]: ...


def gateway_for(insurer: Insurer) -> InsurerGateway:
    """The adapter for the insurer's protocol, checked for what it needs before anything is sent.

    Raises `InsurerConfigurationError` (nothing sent; callers fail the endorsements with class
    `configuration` and this message, SPEC §8) for a protocol without an adapter, a missing or malformed
    endpoint (rest, soap) or folder (file), or an unreadable credentials value.
    """
    from apps.insurers.models import InsurerProtocol

    if insurer.protocol == InsurerProtocol.REST:
        from apps.insurers.gateways.rest import RestGateway

        if not insurer.endpoint.startswith(("http://", "https://")):
            raise InsurerConfigurationError(
                f"Insurer {insurer.code!r} (REST) has no valid endpoint: set it to an http(s) base URL."
            )
        return RestGateway(insurer_code=insurer.code, endpoint=insurer.endpoint)
    if insurer.protocol == InsurerProtocol.SOAP:
        from apps.insurers.gateways.soap import SoapGateway

        return SoapGateway(insurer_code=insurer.code, endpoint=insurer.endpoint)
    if insurer.protocol == InsurerProtocol.FILE:
        from apps.insurers.gateways.file import FileGateway

        return FileGateway.for_insurer(insurer)
    raise ProtocolNotSupportedError(
        f"Insurer {insurer.code!r} uses the {insurer.protocol!r} protocol, which has no gateway adapter "
        "(supported: rest, soap, file)."
    )


@dataclass
class ExchangeLog:
    """One outbound insurer call as a row of the insurer-exchange log (ADR 0029): the same row for every
    protocol. Create it just before the call (its clock starts then) and `record` the outcome once."""

    insurer_code: str
    operation: str
    endpoint: str
    request_body: Any
    submissions: Sequence[EndorsementSubmission]
    correlation_id: str | None
    started: float = field(default_factory=time.monotonic)

    def record(self, status: int | None, response_body: Any, error: str) -> None:
        """Write the row: HTTP status (None when no answer), the (redacted by the audit service) response body,
        the error text ("" on success) and the call's duration in ms."""
        from apps.audit.services import insurer_exchange_record

        insurer_exchange_record(
            insurer_code=self.insurer_code,
            operation=self.operation,
            direction="outbound",
            endpoint=self.endpoint,
            request_body=self.request_body,
            response_status=status,
            response_body=response_body,
            duration_ms=int((time.monotonic() - self.started) * 1000),
            error=error,
            endorsement_id=self.submissions[0].endorsement_id if len(self.submissions) == 1 else None,
            correlation_id=self.correlation_id,
        )
