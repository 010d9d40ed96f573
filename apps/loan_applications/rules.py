"""The automated decision rules (SPEC §9), as a pure function of canonical inputs.

A rule set, once shipped, never changes meaning: a change to a threshold or a rule is a new
`RULE_SET_VERSION`, and old decisions stay reproducible from their stored inputs (docs/adr/0010).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from apps.loan_applications.models import LoanStatus, ReasonCode

RULE_SET_VERSION = "2025-01.v1"
SCORE_THRESHOLD = 650
INCOME_MULTIPLE = 48


@dataclass(frozen=True, slots=True)
class DecisionInputs:
    credit_score: int
    monthly_income: int  # paise
    requested_amount: int  # paise
    loan_type: str
    rule_set_version: str = RULE_SET_VERSION

    def canonical(self) -> dict[str, Any]:
        return {
            "credit_score": self.credit_score,
            "loan_type": self.loan_type,
            "monthly_income": self.monthly_income,
            "requested_amount": self.requested_amount,
            "rule_set_version": self.rule_set_version,
        }

    def sha256(self) -> str:
        return inputs_sha256(self.canonical())


def inputs_sha256(inputs: dict[str, Any]) -> str:
    """The one hash of a decision's inputs (`LoanDecision.input_hash`, `LoanApplication.decision_input_hash`):
    hex SHA-256 of the UTF-8 JSON with sorted keys and no spaces. Automated and manual decisions both use it
    (ADR 0038); re-hashing a stored `LoanDecision.inputs` gives its `input_hash`."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class DecisionOutcome:
    status: LoanStatus
    reasons: list[str]
    max_approved_amount: int | None


def decide(inputs: DecisionInputs) -> DecisionOutcome:
    """1. score < 650 → REJECTED (CREDIT_SCORE_BELOW_THRESHOLD);
    2. income > requested / 48 → PRE_APPROVED, else MANUAL_REVIEW (INCOME_TO_LOAN_RATIO);
    3. max_approved_amount = income × 48 whenever the score passes.

    The ratio is compared in integers (income × 48 > requested), never by dividing money.
    """
    if inputs.rule_set_version != RULE_SET_VERSION:
        raise ValueError(f"unknown rule set {inputs.rule_set_version!r}")
    if inputs.credit_score < SCORE_THRESHOLD:
        return DecisionOutcome(LoanStatus.REJECTED, [ReasonCode.CREDIT_SCORE_BELOW_THRESHOLD.value], None)
    max_amount = inputs.monthly_income * INCOME_MULTIPLE
    if inputs.monthly_income * INCOME_MULTIPLE > inputs.requested_amount:
        return DecisionOutcome(LoanStatus.PRE_APPROVED, [], max_amount)
    return DecisionOutcome(LoanStatus.MANUAL_REVIEW, [ReasonCode.INCOME_TO_LOAN_RATIO.value], max_amount)
