from __future__ import annotations

import pybreaker
import pytest

from apps.partners.tests.factories import PartnerFactory


@pytest.fixture
def partner():
    return PartnerFactory(name="lendco")


@pytest.fixture
def loans(partner, make_key):
    """A client whose key has every scope (loans:read and loans:write among them)."""
    return make_key(partner=partner, all_employers=True)


@pytest.fixture(autouse=True)
def _memory_breaker(monkeypatch):
    """Each test gets its own in-memory bureau breaker (the Redis-shared one is tested on its own)."""
    breaker = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30, name="test-bureau")
    monkeypatch.setattr("apps.loan_applications.bureau.bureau_breaker", lambda: breaker)
    return breaker
