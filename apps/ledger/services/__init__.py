"""Ledger operations (SPEC §6, docs/adr/0008-ledger.md), one module per operation; this package re-exports the
public API (`from apps.ledger import services as ledger`).

- `accounts`: the employer account, the balance UPDATE, the low-balance crossing, mirrored entries;
- `topups`, `holds`, `captures`, `releases`, `refunds`: one operation each, with its SQL (and SQLite path) beside it;
- `errors`, `types`: the refusals, and the requests and results callers exchange.

Production uses the bulk operations only (one lock round per employer account); `hold_place`, `hold_capture`,
`hold_release` and `refund_post` are a bulk of one (ADR 0036).

Every operation is atomic and idempotent by its reference: a retried call with the same reference returns the
original result and writes nothing; the same reference with different parameters raises `ReferenceConflict`.

Locking, in one sentence: the employer's own account row is the only row any operation locks and it is always
the first lock an operation takes. System accounts carry no cached balance (their balance is Σ of their
entries), so employers never wait on each other.

Balances change in the database, not in Python: one `UPDATE … SET posted = posted + %s, held = held + %s WHERE
id = %s [AND posted - held >= %s] RETURNING …` per lock round. It is the F-expression update the ORM would write,
spelled in SQL only because Django's `update()` cannot return the new values (we need them for `balance_after`,
`available_after` and the low-balance crossing without a second round trip while the row is locked). On PostgreSQL
a capture round puts that UPDATE at the head of one data-modifying statement that also writes the rows following
from it (`captures._HOLDS_CAPTURE_SQL`), so the row is locked for that statement and the COMMIT only. The CHECK
constraints (`held >= 0`, `posted - held >= 0` on employer accounts) are the last line of defence; the unique
constraints on (kind, reference), Hold.reference and HoldResolution.hold make a lost race fail instead of
double-applying.
"""

from __future__ import annotations

from apps.ledger.contracts import LedgerAuditAction, LedgerTopic
from apps.ledger.selectors import VerifyReport, ledger_verify
from apps.ledger.services.accounts import ledger_account_open
from apps.ledger.services.captures import hold_capture, holds_capture_bulk
from apps.ledger.services.errors import (
    HoldAlreadyCaptured,
    HoldAlreadyReleased,
    HoldAlreadyResolved,
    HoldNotFound,
    InvalidLedgerRequest,
    LedgerError,
    ReferenceConflict,
    UnknownEmployer,
)
from apps.ledger.services.holds import hold_place, holds_existing, holds_place_bulk
from apps.ledger.services.refunds import refund_post, refunds_post_bulk
from apps.ledger.services.releases import hold_release, holds_release_bulk
from apps.ledger.services.topups import topup_post
from apps.ledger.services.types import MAX_REFERENCE_LENGTH, HoldRequest, HoldResult, RefundRequest

__all__ = [
    "MAX_REFERENCE_LENGTH",
    "HoldAlreadyCaptured",
    "HoldAlreadyReleased",
    "HoldAlreadyResolved",
    "HoldNotFound",
    "HoldRequest",
    "HoldResult",
    "InvalidLedgerRequest",
    "LedgerAuditAction",
    "LedgerError",
    "LedgerTopic",
    "ReferenceConflict",
    "RefundRequest",
    "UnknownEmployer",
    "VerifyReport",
    "hold_capture",
    "hold_place",
    "hold_release",
    "holds_capture_bulk",
    "holds_existing",
    "holds_place_bulk",
    "holds_release_bulk",
    "ledger_account_open",
    "ledger_verify",
    "refund_post",
    "refunds_post_bulk",
    "topup_post",
]
