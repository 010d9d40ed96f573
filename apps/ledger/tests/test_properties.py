"""Property: any sequence of ledger operations (with repeats and invalid resolutions) keeps the invariants."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.employers.tests.factories import EmployerFactory
from apps.ledger import services
from apps.ledger.models import Hold, HoldResolution, LedgerAccount
from apps.ledger.selectors import balance_get, ledger_verify
from apps.ledger.tests.factories import SYSTEM

amounts = st.integers(min_value=1, max_value=50_000)
refs = st.integers(min_value=0, max_value=6)  # few references, so repeats are common
operations = st.lists(
    st.one_of(
        st.tuples(st.just("topup"), amounts, refs),
        st.tuples(st.just("refund"), amounts, refs),
        st.tuples(st.just("hold"), amounts, refs),
        st.tuples(st.just("bulk"), st.lists(st.tuples(amounts, refs), min_size=1, max_size=4), st.just(0)),
        st.tuples(st.just("capture"), st.just(0), refs),
        st.tuples(st.just("capture_bulk"), st.just(0), st.lists(refs, min_size=1, max_size=4)),
        st.tuples(st.just("release_bulk"), st.just(0), st.lists(refs, min_size=1, max_size=4)),
        st.tuples(st.just("refund_bulk"), st.lists(st.tuples(amounts, refs), min_size=1, max_size=4), st.just(0)),
        st.tuples(st.just("release"), st.just(0), refs),
    ),
    min_size=1,
    max_size=25,
)


@pytest.mark.django_db
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=operations)
def test_random_operations_keep_entries_equal_to_balances_and_available_nonnegative(ops):
    employer = EmployerFactory(low_balance_threshold=20_000)  # a fresh employer (and references) per example
    tag = f"e{employer.pk}"
    expected_posted = 0
    for kind, amount, ref in ops:
        try:
            if kind == "topup":
                before = _exists("topup", f"{tag}-t{ref}")
                services.topup_post(employer_id=employer.pk, amount=amount, reference=f"{tag}-t{ref}", actor=SYSTEM)
                expected_posted += 0 if before else amount
            elif kind == "refund":
                before = _exists("refund", f"{tag}-r{ref}")
                services.refund_post(employer_id=employer.pk, amount=amount, reference=f"{tag}-r{ref}", actor=SYSTEM)
                expected_posted += 0 if before else amount
            elif kind == "hold":
                services.hold_place(employer_id=employer.pk, amount=amount, reference=f"{tag}-h{ref}", actor=SYSTEM)
            elif kind == "bulk":
                requests = [services.HoldRequest(f"{tag}-h{r}", a) for a, r in amount]
                services.holds_place_bulk(employer_id=employer.pk, requests=requests, actor=SYSTEM)
            elif kind == "capture":
                hold = Hold.objects.filter(reference=f"{tag}-h{ref}").first()
                captured_before = HoldResolution.objects.filter(hold=hold).exists() if hold else True
                services.hold_capture(reference=f"{tag}-h{ref}", actor=SYSTEM)
                expected_posted -= 0 if captured_before else hold.amount
            elif kind == "capture_bulk":
                holds = {h.reference: h for h in Hold.objects.filter(reference__in=[f"{tag}-h{r}" for r in ref])}
                open_amount = sum(
                    h.amount for h in holds.values() if not HoldResolution.objects.filter(hold=h).exists()
                )
                services.holds_capture_bulk(references=[f"{tag}-h{r}" for r in ref], actor=SYSTEM)
                expected_posted -= open_amount  # all or nothing: a refusal below leaves it unchanged
            elif kind == "release_bulk":
                services.holds_release_bulk(reasons={f"{tag}-h{r}": "bulk" for r in ref}, actor=SYSTEM)
            elif kind == "refund_bulk":
                requests = [services.RefundRequest(employer.pk, a, f"{tag}-r{r}") for a, r in amount]
                new = {r.reference: r.amount for r in reversed(requests) if not _exists("refund", r.reference)}
                services.refunds_post_bulk(requests=requests, actor=SYSTEM)
                expected_posted += sum(new.values())  # all or nothing: a refusal raises before this line
            else:
                services.hold_release(reference=f"{tag}-h{ref}", actor=SYSTEM)
        except (services.ReferenceConflict, services.HoldNotFound, services.HoldAlreadyResolved):
            pass  # refused: a reference reused with other terms, an unknown hold, the opposite resolution

        balance = balance_get(employer_id=employer.pk)
        assert balance.available >= 0
        assert balance.posted == expected_posted
        account = LedgerAccount.objects.filter(employer=employer).first()
        open_held = sum(Hold.objects.filter(account=account, resolution__isnull=True).values_list("amount", flat=True))
        assert balance.held == open_held
        if account is not None:  # accounts open with their first posting, which tracks the flag
            assert balance.low_balance == (balance.available < 20_000)

    assert (
        HoldResolution.objects.filter(hold__account__employer=employer).count()
        <= Hold.objects.filter(account__employer=employer).count()
    )
    report = ledger_verify()
    assert report.ok, report.problems


def _exists(kind: str, reference: str) -> bool:
    from apps.ledger.models import LedgerTransaction

    return LedgerTransaction.objects.filter(kind=kind, reference=reference).exists()
