"""Loan metrics (issue 14): `keel_loan_decisions_total{outcome,by}` — automated and manual decisions by
outcome (the application's status after the decision), counted when the decision commits."""

from __future__ import annotations

from prometheus_client import Counter

from apps.common.metrics import inc_on_commit

DECISIONS = Counter("keel_loan_decisions", "Loan decisions committed, by outcome", ["outcome", "by"])


def decision_committed(*, outcome: str, by: str) -> None:
    inc_on_commit(lambda: DECISIONS.labels(outcome, by).inc())
