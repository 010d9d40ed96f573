"""Where a run pulls an insurer's roster and statement from, by the insurer's protocol (issue 12, ADR 0045).

`roster_source_for(insurer)` checks the insurer's configuration once (the API calls it before answering 202,
so a misconfigured insurer is a 422 naming `insurer`, not a run that fails later) and returns a source whose
`pages` and `statement` hide the protocol: REST (`pull.py`), SOAP (`pull_soap.py`), file (`pull_file.py`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import requests

from apps.insurers.contracts import InsurerConfigurationError, InsurerProtocol
from apps.insurers.credentials import decrypt_credentials
from apps.insurers.files.storage import FileLocation, location_for
from apps.reconciliation.pull import PullPolicy, RosterPage, rest_roster_pages, rest_statement_charges
from apps.reconciliation.pull_file import file_roster_pages, file_statement_charges
from apps.reconciliation.pull_soap import soap_roster_pages, soap_statement_charges

if TYPE_CHECKING:
    from apps.insurers.models import Insurer


class RosterUnsupportedError(Exception):
    """This insurer's roster cannot be pulled: its protocol has no roster, or its configuration is unusable."""


@dataclass
class RosterSource:
    """One insurer's roster and statement of charges, whatever its protocol (a file insurer sends its statement
    as a file beside the roster, ADR 0051)."""

    protocol: str
    endpoint: str = ""
    outbound: FileLocation | None = None
    inbound: FileLocation | None = None
    session: requests.Session | None = None
    sleep: Callable[[float], None] = time.sleep
    policy: PullPolicy = field(default_factory=PullPolicy)

    def pages(self, *, policy_number: str, cursor: str, page_size: int, request_id: str) -> Iterator[RosterPage]:
        """The roster of `policy_number` by page from `cursor`; `request_id` names a file insurer's roster
        request (stable across a resumed run). Raises `RosterPullError`."""
        if self.protocol == InsurerProtocol.SOAP:
            return soap_roster_pages(
                endpoint=self.endpoint,
                policy_number=policy_number,
                cursor=cursor,
                page_size=page_size,
                sleep=self.sleep,
                policy=self.policy,
            )
        if self.protocol == InsurerProtocol.FILE:
            assert self.outbound is not None
            assert self.inbound is not None
            return file_roster_pages(
                outbound=self.outbound,
                inbound=self.inbound,
                policy_number=policy_number,
                request_id=request_id,
                cursor=cursor,
                page_size=page_size,
                sleep=self.sleep,
            )
        return rest_roster_pages(
            endpoint=self.endpoint,
            policy_number=policy_number,
            cursor=cursor,
            page_size=page_size,
            session=self.session,
            sleep=self.sleep,
            policy=self.policy,
        )

    def statement(self, *, policy_number: str, page_size: int, request_id: str) -> Iterator[tuple[int, int]]:
        """`(endorsement_id, amount paise)` in id order; `request_id` names the file insurer's request (the
        roster's: its statement file answers the same request). Raises `RosterPullError`."""
        if self.protocol == InsurerProtocol.SOAP:
            return soap_statement_charges(
                endpoint=self.endpoint, policy_number=policy_number, page_size=page_size, sleep=self.sleep
            )
        if self.protocol == InsurerProtocol.FILE:
            assert self.outbound is not None
            assert self.inbound is not None
            return file_statement_charges(
                outbound=self.outbound,
                inbound=self.inbound,
                policy_number=policy_number,
                request_id=request_id,
                sleep=self.sleep,
            )
        return rest_statement_charges(
            endpoint=self.endpoint,
            policy_number=policy_number,
            page_size=page_size,
            session=self.session,
            sleep=self.sleep,
            policy=self.policy,
        )


def roster_source_for(
    insurer: Insurer,
    *,
    session: requests.Session | None = None,
    sleep: Callable[[float], None] = time.sleep,
    policy: PullPolicy | None = None,
) -> RosterSource:
    """The roster source of `insurer`. Raises `RosterUnsupportedError` with a message an operator can act on
    (an unknown protocol, an endpoint that is not an http(s) URL, a missing or unusable folder)."""
    common = {"session": session, "sleep": sleep, "policy": policy or PullPolicy()}
    if insurer.protocol in (InsurerProtocol.REST, InsurerProtocol.SOAP):
        if not (insurer.endpoint or "").startswith(("http://", "https://")):
            raise RosterUnsupportedError(
                f"Insurer {insurer.code!r} has no valid endpoint for its roster: set it to an http(s) URL."
            )
        return RosterSource(protocol=insurer.protocol, endpoint=insurer.endpoint, **common)  # type: ignore[arg-type]
    if insurer.protocol == InsurerProtocol.FILE:
        try:
            credentials = decrypt_credentials(insurer.credentials, insurer_code=insurer.code)
            outbound = location_for(
                insurer.outbound_folder, credentials=credentials, what=f"Insurer {insurer.code!r} outbound folder"
            )
            inbound = location_for(
                insurer.inbound_folder, credentials=credentials, what=f"Insurer {insurer.code!r} inbound folder"
            )
        except InsurerConfigurationError as exc:
            raise RosterUnsupportedError(str(exc)) from exc
        return RosterSource(protocol=insurer.protocol, outbound=outbound, inbound=inbound, **common)  # type: ignore[arg-type]
    raise RosterUnsupportedError(f"Insurer {insurer.code!r} uses protocol {insurer.protocol!r}, which has no roster.")
