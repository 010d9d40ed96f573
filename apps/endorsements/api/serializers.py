from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.common.fields import MoneyField
from apps.employers.models import Gender
from apps.endorsements.models import (
    EndorsementBatch,
    EndorsementHistory,
    EndorsementStatus,
    EndorsementType,
    PremiumDirection,
)


class EndorsementMemberInputSerializer(serializers.Serializer):  # type: ignore[type-arg]
    employee_code = serializers.CharField(max_length=64)
    first_name = serializers.CharField(max_length=100)
    last_name = serializers.CharField(max_length=100)
    date_of_birth = serializers.DateField()
    gender = serializers.ChoiceField(choices=Gender.choices)
    email = serializers.EmailField(required=False, allow_blank=True)


class EndorsementChangesInputSerializer(serializers.Serializer):  # type: ignore[type-arg]
    first_name = serializers.CharField(max_length=100, required=False)
    last_name = serializers.CharField(max_length=100, required=False)
    date_of_birth = serializers.DateField(required=False)
    gender = serializers.ChoiceField(choices=Gender.choices, required=False)
    email = serializers.EmailField(required=False, allow_blank=True)
    sum_insured = serializers.DecimalField(max_digits=14, decimal_places=2, required=False, coerce_to_string=True)


class EndorsementCreateInputSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """Documents the request shape; bodies are parsed by apps.endorsements.parsing (one parser for
    singles and batch rows)."""

    employer = serializers.IntegerField()
    policy = serializers.IntegerField()
    type = serializers.ChoiceField(choices=EndorsementType.choices)
    effective_date = serializers.DateField()
    employee = EndorsementMemberInputSerializer(required=False, help_text="addition only")
    employee_code = serializers.CharField(required=False, help_text="deletion and correction")
    changes = EndorsementChangesInputSerializer(required=False, help_text="correction only")
    sum_insured = serializers.DecimalField(
        max_digits=14,
        decimal_places=2,
        required=False,
        coerce_to_string=True,
        help_text="addition only; default: the policy's",
    )


class EndorsementSerializer(serializers.Serializer):  # type: ignore[type-arg]
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


class EndorsementHistorySerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
    status = serializers.CharField(source="to_status")

    class Meta:
        model = EndorsementHistory
        fields = ("status", "at", "detail")


class EndorsementDetailSerializer(EndorsementSerializer):
    history = EndorsementHistorySerializer(many=True, read_only=True)


class EndorsementQuoteSerializer(serializers.Serializer):  # type: ignore[type-arg]
    premium_amount = MoneyField()
    premium_direction = serializers.ChoiceField(choices=["debit", "credit", "none"])
    annual_premium = MoneyField()
    remaining_days = serializers.IntegerField()
    term_days = serializers.IntegerField()


class EndorsementBatchJsonInputSerializer(serializers.Serializer):  # type: ignore[type-arg]
    employer = serializers.IntegerField()
    policy = serializers.IntegerField()
    rows = serializers.ListField(
        child=serializers.DictField(),
        max_length=50_000,
        help_text="rows shaped like single endorsement requests (without employer/policy)",
    )


class EndorsementBatchCsvInputSerializer(serializers.Serializer):  # type: ignore[type-arg]
    employer = serializers.IntegerField()
    policy = serializers.IntegerField()
    file = serializers.FileField(
        help_text="CSV: employee_code,first_name,last_name,date_of_birth,gender,email,type,effective_date[,sum_insured]"
    )


class EndorsementBatchRowErrorSerializer(serializers.Serializer):  # type: ignore[type-arg]
    row = serializers.IntegerField()
    field = serializers.CharField()
    detail = serializers.CharField()


class EndorsementBatchSerializer(serializers.ModelSerializer):  # type: ignore[type-arg]
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
