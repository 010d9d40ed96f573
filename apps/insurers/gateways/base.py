from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from apps.insurers.contracts import EndorsementSubmission, ProtocolNotSupportedError, SubmissionResult

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
    from apps.insurers.gateways.rest import RestGateway
    from apps.insurers.models import InsurerProtocol

    if insurer.protocol == InsurerProtocol.REST:
        return RestGateway(insurer_code=insurer.code, endpoint=insurer.endpoint)
    raise ProtocolNotSupportedError(
        f"Insurer {insurer.code!r} uses the {insurer.protocol!r} protocol, which has no gateway adapter yet "
        "(only 'rest' is implemented; SOAP and file exchanges are planned)."
    )
