from __future__ import annotations

import pytest

from apps.loan_applications.rules import RULE_SET_VERSION, DecisionInputs, decide


@pytest.mark.parametrize(
    ("score", "income", "requested", "status", "reasons", "max_amount"),
    [
        (649, 100_000_00, 1_000_00, "REJECTED", ["CREDIT_SCORE_BELOW_THRESHOLD"], None),
        (610, 75_000_00, 500_000_00, "REJECTED", ["CREDIT_SCORE_BELOW_THRESHOLD"], None),
        (650, 75_000_00, 500_000_00, "PRE_APPROVED", [], 3_600_000_00),
        (790, 75_000_00, 500_000_00, "PRE_APPROVED", [], 3_600_000_00),
        # income must be strictly greater than requested / 48: 48 × 10,000 = 4,80,000
        (700, 10_000_00, 480_000_00, "MANUAL_REVIEW", ["INCOME_TO_LOAN_RATIO"], 480_000_00),
        (700, 10_000_00, 479_999_99, "PRE_APPROVED", [], 480_000_00),
        (700, 80_000_00, 5_000_000_00, "MANUAL_REVIEW", ["INCOME_TO_LOAN_RATIO"], 3_840_000_00),
    ],
)
def test_decision_rules(score, income, requested, status, reasons, max_amount):
    outcome = decide(
        DecisionInputs(credit_score=score, monthly_income=income, requested_amount=requested, loan_type="HOME")
    )
    assert (outcome.status, outcome.reasons, outcome.max_approved_amount) == (status, reasons, max_amount)


def test_input_hash_is_stable_and_sensitive_to_every_input():
    base = DecisionInputs(credit_score=700, monthly_income=1, requested_amount=2, loan_type="HOME")
    assert (
        base.sha256()
        == DecisionInputs(credit_score=700, monthly_income=1, requested_amount=2, loan_type="HOME").sha256()
    )
    assert len(base.sha256()) == 64
    variants = [
        DecisionInputs(credit_score=701, monthly_income=1, requested_amount=2, loan_type="HOME"),
        DecisionInputs(credit_score=700, monthly_income=2, requested_amount=2, loan_type="HOME"),
        DecisionInputs(credit_score=700, monthly_income=1, requested_amount=3, loan_type="HOME"),
        DecisionInputs(credit_score=700, monthly_income=1, requested_amount=2, loan_type="AUTO"),
    ]
    assert len({base.sha256(), *(v.sha256() for v in variants)}) == 5
    assert base.canonical()["rule_set_version"] == RULE_SET_VERSION


def test_unknown_rule_set_is_refused():
    with pytest.raises(ValueError):
        decide(DecisionInputs(credit_score=700, monthly_income=1, requested_amount=1, loan_type="HOME",
                              rule_set_version="1999.v0"))  # fmt: skip
