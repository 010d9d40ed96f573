from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.common.fields import MoneyField
from apps.common.money import format_minor
from apps.common.serializers import ModelSerializer, Serializer
from apps.employers.contracts import Gender
from apps.endorsements.models import (
    EndorsementBatch,
    EndorsementHistory,
    EndorsementStatus,
    EndorsementType,
    PremiumDirection,
)
from apps.endorsements.parsing import MAX_ID, MAX_SUM_INSURED

GENDER_HELP = "Stored as male, female or other; M, F, O and any case of the three words are accepted."
# The quote's exact amounts: at least two places, as many more as the value needs.
EXACT_AMOUNT_PATTERN = r"^(0|[1-9][0-9]*)\.[0-9]{2,}$"


class EndorsementMemberInputSerializer(Serializer):
    employee_code = serializers.CharField(max_length=64)
    first_name = serializers.CharField(max_length=100)
    last_name = serializers.CharField(max_length=100)
    date_of_birth = serializers.DateField()
    gender = serializers.ChoiceField(choices=Gender.choices, help_text=GENDER_HELP)
    email = serializers.EmailField(required=False, allow_blank=True)


class EndorsementChangesInputSerializer(Serializer):
    first_name = serializers.CharField(max_length=100, required=False)
    last_name = serializers.CharField(max_length=100, required=False)
    date_of_birth = serializers.DateField(required=False)
    gender = serializers.ChoiceField(choices=Gender.choices, required=False, help_text=GENDER_HELP)
    email = serializers.EmailField(required=False, allow_blank=True)
    sum_insured = MoneyField(required=False, min_minor=1, max_minor=MAX_SUM_INSURED)


class EndorsementCreateInputSerializer(Serializer):
    """Documents the request shape; bodies are parsed by apps.endorsements.parsing (one parser for
    singles and batch rows)."""

    employer = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    policy = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    type = serializers.ChoiceField(choices=EndorsementType.choices)
    effective_date = serializers.DateField()
    employee = EndorsementMemberInputSerializer(required=False, help_text="addition only")
    employee_code = serializers.CharField(required=False, help_text="deletion and correction")
    changes = EndorsementChangesInputSerializer(required=False, help_text="correction only")
    sum_insured = MoneyField(
        required=False, min_minor=1, max_minor=MAX_SUM_INSURED, help_text="addition only; default: the policy's"
    )


class EndorsementSerializer(Serializer):
    """Read-only representation of an endorsement. Fields are declared, not introspected from the model:
    a `ModelSerializer` rebuilds its fields from model metadata on every instantiation (≈ 0.5 ms per
    response, on the hot `POST /endorsements` path)."""

    id = serializers.IntegerField(read_only=True)
    employer = serializers.IntegerField(source="employer_id", read_only=True)
    policy = serializers.IntegerField(source="policy_id", read_only=True)
    type = serializers.ChoiceField(choices=EndorsementType.choices, read_only=True)
    status = serializers.ChoiceField(choices=EndorsementStatus.choices, read_only=True)
    employee_code = serializers.CharField(read_only=True)
    effective_date = serializers.DateField(read_only=True)
    sum_insured = MoneyField(allow_null=True, read_only=True)
    premium_amount = MoneyField(read_only=True)
    premium_direction = serializers.ChoiceField(choices=PremiumDirection.choices, read_only=True)
    batch = serializers.IntegerField(source="batch_id", allow_null=True, read_only=True)
    insurer_reference = serializers.CharField(read_only=True)
    rejection_class = serializers.CharField(read_only=True)
    rejection_reason = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    updated_at = serializers.DateTimeField(read_only=True)

    def to_representation(self, instance: Any) -> dict[str, Any]:
        """The declared fields, written out: DRF's generic path deep-copies the sixteen declared fields per
        serializer and walks them (≈ 2,900 profiler events per `POST /endorsements`, issue 15). Same output,
        value for value — `tests` compare it with DRF's generic `to_representation` for every field."""
        return endorsement_representation(instance)


def _datetime(value: Any) -> Any:
    return None if value is None else _DATETIME.to_representation(value)


# DRF's own field instances format the dates, so the output is DRF's by construction (time zone, `Z`).
_DATETIME = serializers.DateTimeField()
_DATE = serializers.DateField()


def endorsement_representation(e: Any) -> dict[str, Any]:
    """`EndorsementSerializer`'s document for endorsement `e` (an `Endorsement`, or any object with its
    attributes): ids as integers, money as decimal strings (`format_minor`, paise → "1234.50"), datetimes as
    ISO 8601 in the current time zone, None for null. The key order is the serializer's field order."""
    return {
        "id": e.id,
        "employer": e.employer_id,
        "policy": e.policy_id,
        "type": str(e.type),
        "status": str(e.status),
        "employee_code": str(e.employee_code),
        "effective_date": None if e.effective_date is None else _DATE.to_representation(e.effective_date),
        "sum_insured": None if e.sum_insured is None else format_minor(e.sum_insured),
        "premium_amount": None if e.premium_amount is None else format_minor(e.premium_amount),
        "premium_direction": str(e.premium_direction),
        "batch": e.batch_id,
        "insurer_reference": str(e.insurer_reference),
        "rejection_class": str(e.rejection_class),
        "rejection_reason": str(e.rejection_reason),
        "created_at": _datetime(e.created_at),
        "updated_at": _datetime(e.updated_at),
    }


class EndorsementHistorySerializer(ModelSerializer):
    status = serializers.CharField(source="to_status")

    class Meta:
        model = EndorsementHistory
        fields = ("status", "at", "detail")


class EndorsementDetailSerializer(EndorsementSerializer):
    history = EndorsementHistorySerializer(many=True, read_only=True)

    def to_representation(self, instance: Any) -> dict[str, Any]:
        """`EndorsementSerializer`'s document plus `history` (`[{status, at, detail}]` in id order), written
        out like the parent's (issue 15: `GET /endorsements/{id}` ≤ 1.5× the request-cost limit)."""
        return endorsement_detail_representation(instance, instance.history.all())


def endorsement_detail_representation(e: Any, history: Iterable[Any]) -> dict[str, Any]:
    """`EndorsementDetailSerializer`'s document: `endorsement_representation(e)` plus `history`, a list of
    `{status, at, detail}` for the given history rows (`EndorsementHistory`, in the order given)."""
    document = endorsement_representation(e)
    document["history"] = [
        {"status": str(h.to_status), "at": _datetime(h.at), "detail": str(h.detail)} for h in history
    ]
    return document


@extend_schema_field(
    {
        "type": "string",
        "format": "decimal",
        "pattern": EXACT_AMOUNT_PATTERN,
        "example": "16.425",
        "description": "Indian rupees, exact: a decimal string with as many places as the value needs (at least "
        "two), never rounded, so the premium can be recomputed from it (SPEC §7).",
    }
)
class ExactAmountField(serializers.CharField):
    """An exact amount already formatted by `pricing.format_exact_rupees` (read-only)."""


class EndorsementQuoteSerializer(Serializer):
    """The arithmetic behind a premium (SPEC §7): premium_amount = round_half_up(annual_premium ×
    remaining_days / term_days), or the difference of two annual premiums for a correction."""

    premium_amount = MoneyField()
    premium_direction = serializers.ChoiceField(choices=["debit", "credit", "none"])
    annual_premium = ExactAmountField(read_only=True)
    annual_premium_before = ExactAmountField(
        read_only=True,
        allow_null=True,
        help_text="A correction's annual premium before the change (null for additions and deletions): "
        "premium_amount = round_half_up(|annual_premium − annual_premium_before| × remaining_days / term_days).",
    )
    remaining_days = serializers.IntegerField()
    term_days = serializers.IntegerField()


class EndorsementBatchJsonInputSerializer(Serializer):
    employer = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    policy = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    rows = serializers.ListField(
        child=serializers.DictField(),
        max_length=50_000,
        help_text="rows shaped like single endorsement requests (without employer/policy)",
    )


class EndorsementBatchCsvInputSerializer(Serializer):
    employer = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    policy = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    file = serializers.FileField(
        help_text="CSV: employee_code,first_name,last_name,date_of_birth,gender,email,type,effective_date[,sum_insured]"
    )


class EndorsementBatchRowErrorSerializer(Serializer):
    row = serializers.IntegerField(help_text="1-based data row (the CSV header and blank rows are not counted)")
    line = serializers.IntegerField(
        allow_null=True, required=False, help_text="CSV: the file line on which the row starts (header = 1)"
    )
    field = serializers.CharField()
    detail = serializers.CharField()


class EndorsementBatchSerializer(ModelSerializer):
    status = serializers.SerializerMethodField()
    errors = EndorsementBatchRowErrorSerializer(many=True, read_only=True)  # type: ignore[assignment]

    class Meta:
        model = EndorsementBatch
        fields = (
            "id",
            "employer",
            "policy",
            "status",
            "total_rows",
            "accepted",
            "rejected",
            "errors",
            "created_at",
            "completed_at",
            "cancelled_at",
        )
        read_only_fields = fields

    @extend_schema_field(serializers.ChoiceField(choices=["processing", "completed", "cancelled"]))
    def get_status(self, batch: EndorsementBatch) -> str:
        if batch.cancelled_at:
            return "cancelled"
        return "completed" if batch.completed_at else "processing"


class EndorsementBatchListItemSerializer(EndorsementBatchSerializer):
    """A batch in `GET /endorsement-batches`: everything but the row errors (up to 50,000 of them per batch:
    `GET /endorsement-batches/{id}` has them)."""

    class Meta(EndorsementBatchSerializer.Meta):
        fields = tuple(f for f in EndorsementBatchSerializer.Meta.fields if f != "errors")  # type: ignore[assignment]
        read_only_fields = fields  # type: ignore[assignment]


class EndorsementBatchProgressSerializer(EndorsementBatchSerializer):
    counts = serializers.DictField(child=serializers.IntegerField(), read_only=True)
    percent_complete = serializers.FloatField(read_only=True)

    class Meta(EndorsementBatchSerializer.Meta):
        fields = (*EndorsementBatchSerializer.Meta.fields, "counts", "percent_complete")  # type: ignore[assignment]
        read_only_fields = fields  # type: ignore[assignment]


def progress_payload(batch: EndorsementBatch, progress: dict[str, Any]) -> dict[str, Any]:
    data = EndorsementBatchSerializer(batch).data
    return {**data, **progress}
