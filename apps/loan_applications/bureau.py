"""The credit bureau behind one small interface: the simulated bureau (SPEC §9) today, a real client later.

A bureau call is network I/O: it runs outside any database transaction, behind a circuit breaker whose
state is shared by every worker (pybreaker with Redis storage when REDIS_URL is set, in-memory otherwise),
with a few quick retries with jittered exponential backoff. When the breaker is open or the retries are
spent, the caller gets `BureauUnavailable` and the outbox retries the whole step later.
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from functools import lru_cache
from typing import Any, Protocol

import pybreaker
from django.conf import settings

from apps.loan_applications.models import MAX_SCORE, MIN_SCORE, LoanType

# Scores the simulated bureau returns exactly, whatever the other inputs (SPEC §9).
FIXED_SCORES = {"ABCDE1234F": 790, "FGHIJ5678K": 610}
BASE_SCORE = 650
HIGH_INCOME_THRESHOLD = 75_000 * 100  # paise; strictly above → +40
LOW_INCOME_THRESHOLD = 30_000 * 100  # paise; strictly below → −20
HIGH_INCOME_BONUS = 40
LOW_INCOME_PENALTY = -20
LOAN_TYPE_ADJUSTMENT = {LoanType.PERSONAL: -10, LoanType.HOME: 10, LoanType.AUTO: 0}


@dataclass(frozen=True, slots=True)
class BureauRequest:
    """What a bureau needs for a soft pull. Holds the plaintext PAN: never log or persist it."""

    application_id: uuid.UUID
    pan: str
    first_name: str
    last_name: str
    date_of_birth: date
    monthly_income: int  # paise
    loan_type: str

    def __repr__(self) -> str:  # keep the PAN and name out of tracebacks and debug output
        return f"BureauRequest(application_id={self.application_id})"


@dataclass(frozen=True, slots=True)
class BureauReport:
    bureau: str
    score: int
    factors: dict[str, Any] = field(default_factory=dict)


class BureauError(Exception):
    """A bureau failure worth retrying (timeout, 5xx, connection refused)."""


class BureauUnavailable(Exception):
    """Retries spent or the circuit is open: try the whole step again later."""

    def __init__(self, reason: str, *, retry_after: float) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


class CreditBureau(Protocol):
    name: str

    def soft_pull(self, request: BureauRequest) -> BureauReport: ...


def id_variation(application_id: uuid.UUID) -> int:
    """Deterministic variation in [−5, +5] from the application id: sha256(id) mod 11 − 5."""
    digest = hashlib.sha256(str(application_id).encode("ascii")).digest()
    return int.from_bytes(digest[:8], "big") % 11 - 5


def clamp_score(raw: int) -> int:
    return max(MIN_SCORE, min(MAX_SCORE, raw))


class SimulatedBureau:
    """The sandbox bureau of SPEC §9. `base_score` is a parameter only so tests can reach both clamps."""

    name = "simulated"

    def __init__(self, *, base_score: int = BASE_SCORE) -> None:
        self.base_score = base_score

    def soft_pull(self, request: BureauRequest) -> BureauReport:
        fixed = FIXED_SCORES.get(request.pan)
        if fixed is not None:
            return BureauReport(bureau=self.name, score=fixed, factors={"fixed_test_identity": True})
        factors: dict[str, Any] = {"base": self.base_score}
        raw = self.base_score
        if request.monthly_income > HIGH_INCOME_THRESHOLD:
            factors["high_income"] = HIGH_INCOME_BONUS
            raw += HIGH_INCOME_BONUS
        elif request.monthly_income < LOW_INCOME_THRESHOLD:
            factors["low_income"] = LOW_INCOME_PENALTY
            raw += LOW_INCOME_PENALTY
        loan_adjustment = LOAN_TYPE_ADJUSTMENT[LoanType(request.loan_type)]
        factors["loan_type"] = loan_adjustment
        raw += loan_adjustment
        variation = id_variation(request.application_id)
        factors["variation"] = variation
        raw += variation
        score = clamp_score(raw)
        if score != raw:
            factors["clamped_from"] = raw
        return BureauReport(bureau=self.name, score=score, factors=factors)


def default_bureau() -> CreditBureau:
    """The configured bureau. Only the simulated one exists; a real client plugs in here."""
    return SimulatedBureau()


BREAKER_FAIL_MAX = 5
BREAKER_RESET_SECONDS = 30.0


@lru_cache(maxsize=1)
def bureau_breaker() -> pybreaker.CircuitBreaker:
    """One breaker per process whose state lives in Redis, so every worker sees the bureau as one."""
    storage: pybreaker.CircuitBreakerStorage
    redis_url = getattr(settings, "REDIS_URL", "")
    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
        storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace="keel:breaker:bureau")
    else:
        storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
    return pybreaker.CircuitBreaker(
        fail_max=BREAKER_FAIL_MAX,
        reset_timeout=BREAKER_RESET_SECONDS,
        state_storage=storage,
        name="credit_bureau",
        # Only bureau failures count; a programming error must not open the circuit for everyone.
        exclude=[lambda exc: not isinstance(exc, BureauError)],
    )


def soft_pull_with_retries(
    request: BureauRequest,
    *,
    bureau: CreditBureau,
    breaker: pybreaker.CircuitBreaker | None = None,
    attempts: int = 3,
    backoff_base: float = 0.05,
    sleep: Callable[[float], None] = time.sleep,
) -> BureauReport:
    """Call the bureau through the breaker; retry `BureauError` up to `attempts` times with full-jitter
    exponential backoff. An open circuit is not retried here (that would only hammer it): the step is
    rescheduled by the outbox after the breaker's reset timeout."""
    breaker = breaker or bureau_breaker()
    last: BaseException | None = None
    for attempt in range(attempts):
        try:
            return breaker.call(bureau.soft_pull, request)
        except pybreaker.CircuitBreakerError as exc:
            raise BureauUnavailable("credit bureau circuit is open", retry_after=breaker.reset_timeout) from exc
        except BureauError as exc:
            last = exc
            if attempt + 1 < attempts:
                sleep(random.uniform(0, backoff_base * 2**attempt))  # noqa: S311 — jitter, not security
    raise BureauUnavailable(f"credit bureau failed {attempts} times: {type(last).__name__}", retry_after=5.0)
