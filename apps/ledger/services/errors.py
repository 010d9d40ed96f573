"""The ledger's refusals (SPEC §6): every one is a `LedgerError`."""

from __future__ import annotations


class LedgerError(Exception):
    """Base class of every ledger refusal."""


class InvalidLedgerRequest(LedgerError, ValueError):
    """Amount not a positive integer, or an empty/too long reference."""


class UnknownEmployer(LedgerError):
    pass


class ReferenceConflict(LedgerError):
    """The reference was already used for an operation with different parameters."""


class HoldNotFound(LedgerError):
    pass


class HoldAlreadyResolved(LedgerError):
    """The opposite resolution was asked of a hold that already resolved (a hold resolves exactly once)."""


class HoldAlreadyCaptured(HoldAlreadyResolved):
    pass


class HoldAlreadyReleased(HoldAlreadyResolved):
    pass
