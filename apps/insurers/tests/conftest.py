from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from datetime import date

import pytest

from apps.insurers.contracts import EndorsementSubmission, MemberData

_ids = itertools.count(1000)


@pytest.fixture
def make_submission() -> Callable[..., EndorsementSubmission]:
    def _make(
        *,
        endorsement_id: int | None = None,
        kind: str = "addition",
        date_of_birth: date = date(1990, 5, 17),
        effective_date: date = date(2026, 4, 1),
        idempotency_key: str | None = None,
        employee_code: str | None = None,
    ) -> EndorsementSubmission:
        eid = endorsement_id if endorsement_id is not None else next(_ids)
        return EndorsementSubmission(
            endorsement_id=eid,
            idempotency_key=idempotency_key or f"end-{eid}-{uuid.uuid4().hex[:8]}",
            kind=kind,  # type: ignore[arg-type]
            policy_number="POL-001",
            effective_date=effective_date,
            member=MemberData(
                employee_code=employee_code or f"E{eid}",
                first_name="Asha",
                last_name="Verma",
                date_of_birth=date_of_birth,
                gender="female",
                email="asha.verma@example.com",
            ),
            sum_insured=50_000_000,
            premium_amount=123_456,
            premium_direction="debit" if kind == "addition" else "credit",
        )

    return _make


@pytest.fixture
def sandbox_insurer(live_server):
    """The `sandbox-rest` insurer registered against the live test server (real HTTP)."""
    from apps.insurers.sandbox.setup import sandbox_register

    (insurer,) = sandbox_register(base_url=live_server.url)
    return insurer


@pytest.fixture(autouse=True)
def _file_condition_memory_of_its_own():
    """Each test starts with no remembered file-job condition (`files.conditions`, kept in the shared cache for
    a week): otherwise a condition one test reported is "not news" in the next, or in the next suite run."""
    from django.core.cache import cache

    from apps.insurers.files.conditions import KEY_PREFIX

    def forget() -> None:
        try:
            keys = cache._cache.get_client().keys(f"*{KEY_PREFIX}*")  # Redis: only the condition keys
            if keys:
                cache._cache.get_client().delete(*keys)
        except AttributeError:
            cache.clear()  # locmem (no Redis): the whole cache is this process's

    forget()
    yield
    forget()
