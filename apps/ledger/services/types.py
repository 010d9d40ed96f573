"""What callers pass to and get back from the ledger's operations, and the checks every request passes first.
Amounts are integer paise."""

from __future__ import annotations

from dataclasses import dataclass

from apps.ledger.models import Hold
from apps.ledger.services.errors import InvalidLedgerRequest

MAX_REFERENCE_LENGTH = 200
# `reference__in` lookups and bulk inserts are chunked below PostgreSQL's 65,535 bind-parameter limit.
_CHUNK = 5000


@dataclass(frozen=True, slots=True)
class HoldRequest:
    reference: str
    amount: int
    endorsement_id: int | None = None


@dataclass(frozen=True, slots=True)
class HoldResult:
    """`placed` False means nothing was written. A repeat of a placed reference reports the original hold."""

    placed: bool
    hold: Hold | None
    # The employer's `available` right after this request was decided (for a replay: now).
    available_after: int


@dataclass(frozen=True, slots=True)
class RefundRequest:
    employer_id: int
    amount: int
    reference: str
    endorsement_id: int | None = None


def _check_amount(amount: int) -> None:
    if isinstance(amount, bool) or not isinstance(amount, int) or amount <= 0:
        raise InvalidLedgerRequest(f"amounts are positive integer paise, got {amount!r}")


def _check_reference(reference: str) -> None:
    if not isinstance(reference, str) or not reference.strip() or len(reference) > MAX_REFERENCE_LENGTH:
        raise InvalidLedgerRequest(f"a reference is 1–{MAX_REFERENCE_LENGTH} characters, got {reference!r}")
