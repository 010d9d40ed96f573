"""A negative amount is a range error, not a malformed one (issue 11, item 5): every money field of the API
answers "-5" as it answers an amount below its lower bound ("Must be greater than 0…" where it must be
positive), never "Enter an amount as a decimal string…".

The table is generated from the serializers: every writable `MoneyField` of every serializer class of the
project's apps (nested ones included), so a money field added later is covered without a new line here. The
endorsement API and CSV, whose bodies are parsed by `apps.endorsements.parsing`, are walked through the real
API as well.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import date
from typing import Any

import pytest
from django.urls import get_resolver
from django.utils import timezone
from rest_framework import serializers

from apps.common.fields import MoneyField
from apps.common.money import MAX_MINOR, format_minor, money_range_message
from apps.endorsements.parsing import MAX_SUM_INSURED
from apps.endorsements.tests.factories import PolicyFactory, addition, correction

TODAY = date(2026, 6, 1)
GRAMMAR = "Enter an amount as a decimal string"


def _serializer_classes() -> list[type[serializers.Serializer]]:
    get_resolver().url_patterns  # importing every view imports every API serializer
    seen: list[type[serializers.Serializer]] = []
    todo = list(serializers.Serializer.__subclasses__())
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        if cls.__module__.startswith("apps.") and cls not in seen:
            seen.append(cls)
    return sorted(seen, key=lambda c: f"{c.__module__}.{c.__qualname__}")


def _money_fields(serializer: serializers.Serializer, prefix: str = "") -> Iterator[tuple[str, MoneyField]]:
    for name, field in serializer.fields.items():
        if isinstance(field, serializers.ListSerializer):
            field = field.child
        if isinstance(field, serializers.Serializer):
            yield from _money_fields(field, f"{prefix}{name}.")
        elif isinstance(field, MoneyField) and not field.read_only:
            yield f"{prefix}{name}", field


def _table() -> list[tuple[str, str, MoneyField]]:
    rows = []
    for cls in _serializer_classes():
        try:
            found = list(_money_fields(cls()))
        except (TypeError, AssertionError):  # an abstract base (no Meta) or one needing arguments: no money
            continue
        for path, field in found:
            rows.append((f"{cls.__module__}.{cls.__qualname__}", path, field))
    return rows


TABLE = _table()


def test_the_table_holds_the_money_fields_partners_write() -> None:
    names = {(owner.rsplit(".", 1)[-1], path) for owner, path, _ in TABLE}
    assert {
        ("EndorsementCreateInputSerializer", "sum_insured"),
        ("EndorsementCreateInputSerializer", "changes.sum_insured"),
        ("EndorsementChangesInputSerializer", "sum_insured"),
        ("LoanApplicationCreateInputSerializer", "monthly_income"),
        ("LoanApplicationCreateInputSerializer", "requested_amount"),
    } <= names, sorted(names)
    assert len(TABLE) >= 10


@pytest.mark.parametrize(("owner", "path", "field"), TABLE, ids=[f"{o.rsplit('.', 1)[-1]}.{p}" for o, p, _ in TABLE])
@pytest.mark.parametrize("value", ["-5", "-0.01", "-100", -100, "-0"])
def test_a_negative_amount_gets_the_fields_range_message(owner, path, field, value) -> None:
    with pytest.raises(serializers.ValidationError) as caught:
        field.run_validation(value)

    assert caught.value.detail == [money_range_message(field.min_minor, field.max_minor)]
    assert GRAMMAR not in str(caught.value.detail[0])


@pytest.mark.parametrize(("owner", "path", "field"), TABLE, ids=[f"{o.rsplit('.', 1)[-1]}.{p}" for o, p, _ in TABLE])
def test_below_the_lower_bound_says_the_same_as_negative(owner, path, field) -> None:
    if field.min_minor == 0:
        assert field.run_validation("0") == 0
        return
    below = format_minor(field.min_minor - 1)

    assert _message(field, below) == _message(field, "-5") == money_range_message(field.min_minor, field.max_minor)


def _message(field: MoneyField, value: str) -> str:
    with pytest.raises(serializers.ValidationError) as caught:
        field.run_validation(value)
    [detail] = caught.value.detail
    return str(detail)


def test_range_messages_read_as_the_issue_asks() -> None:
    assert money_range_message(1, MAX_SUM_INSURED) == "Must be greater than 0 and at most 10000000000.00."
    assert money_range_message(1, MAX_MINOR) == "Must be greater than 0."
    assert money_range_message(0, MAX_MINOR) == "Must not be negative."
    assert money_range_message(100_00, MAX_MINOR) == "Must be at least 100.00."


# --- through the real endorsement API and CSV (parsed by apps.endorsements.parsing) -------------------------

SUM_RANGE = f"Must be greater than 0 and at most {format_minor(MAX_SUM_INSURED)}."


@pytest.fixture
def policy(db, time_machine):
    time_machine.move_to(timezone.make_aware(timezone.datetime(2026, 6, 1, 10, 0)), tick=False)
    return PolicyFactory()


@pytest.fixture
def client(make_key, policy):
    return make_key(partner=policy.employer.partner, employers=[policy.employer])


def _errors(response: Any) -> list[tuple[str, str]]:
    assert response.status_code == 422, response.content
    return [(e["pointer"], e["detail"]) for e in response.json()["errors"]]


@pytest.mark.parametrize("value", ["-5", "0", "-0.01"])
def test_api_sum_insured_negative_or_zero_says_greater_than_0(client, policy, value) -> None:
    single = client.post("/api/v1/endorsements", addition(policy, "N-1", effective=TODAY, sum_insured=value))
    changed = client.post("/api/v1/endorsements", correction(policy, "N-1", effective=TODAY, sum_insured=value))

    assert _errors(single) == [("/sum_insured", SUM_RANGE)]
    assert _errors(changed) == [("/changes/sum_insured", SUM_RANGE)]


@pytest.mark.parametrize("value", ["-100", "0", "-0.5"])
def test_csv_sum_insured_negative_or_zero_says_greater_than_0(client, policy, value) -> None:
    content = (
        "employee_code,first_name,last_name,date_of_birth,gender,email,type,effective_date,sum_insured\r\n"
        f"C-1,Asha,Rao,1990-05-17,F,c1@example.com,addition,{TODAY.isoformat()},300000.00\r\n"
        f"C-2,Asha,Rao,1990-05-17,F,c2@example.com,addition,{TODAY.isoformat()},{value}\r\n"
    ).encode()
    file = io.BytesIO(content)
    file.name = "census.csv"

    response = client.client.post(
        "/api/v1/endorsement-batches",
        {"employer": policy.employer_id, "policy": policy.pk, "file": file},
        format="multipart",
    )

    assert response.status_code == 202, response.content
    assert [(e["row"], e["field"], e["detail"]) for e in response.json()["errors"]] == [(2, "sum_insured", SUM_RANGE)]


def test_ledger_topup_of_a_negative_amount_says_greater_than_0(make_key, policy) -> None:
    client = make_key(partner=policy.employer.partner, employers=[policy.employer])

    response = client.post(
        "/api/v1/ledger/topups", {"employer": policy.employer_id, "amount": "-5", "reference": "neg-1"}
    )

    assert _errors(response) == [("/amount", "Must be greater than 0.")]
