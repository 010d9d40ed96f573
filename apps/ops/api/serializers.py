"""Shapes of the analytics API (documentation for OpenAPI; the view returns the selector's dict)."""

from __future__ import annotations

from rest_framework import serializers

from apps.common.serializers import Serializer
from apps.endorsements.contracts import EndorsementStatus, EndorsementType


class AnalyticsByStatusSerializer(Serializer):
    def get_fields(self) -> dict[str, serializers.Field]:  # type: ignore[type-arg]
        return {s: serializers.IntegerField() for s in EndorsementStatus.values}


class AnalyticsByTypeSerializer(Serializer):
    def get_fields(self) -> dict[str, serializers.Field]:  # type: ignore[type-arg]
        return {t: serializers.IntegerField() for t in EndorsementType.values}


class AnalyticsLatencySerializer(Serializer):
    median = serializers.FloatField(allow_null=True, help_text="seconds, RECEIVED → ACTIVE, percentile_cont")
    p95 = serializers.FloatField(allow_null=True, help_text="seconds, RECEIVED → ACTIVE, percentile_cont")
    count = serializers.IntegerField(help_text="ACTIVE endorsements the percentiles are computed over")


class AnalyticsPremiumSerializer(Serializer):
    currency = serializers.CharField()
    debited = serializers.DecimalField(max_digits=20, decimal_places=2, help_text="rupees, ACTIVE debits")
    credited = serializers.DecimalField(max_digits=20, decimal_places=2, help_text="rupees, ACTIVE credits")


class AnalyticsRejectionClassSerializer(Serializer):
    def get_fields(self) -> dict[str, serializers.Field]:  # type: ignore[type-arg]
        return {"class": serializers.CharField(), "count": serializers.IntegerField()}


class AnalyticsHourSerializer(Serializer):
    hour = serializers.DateTimeField(help_text="start of the Asia/Kolkata hour")
    count = serializers.IntegerField(help_text="endorsements received in that hour")


class EndorsementAnalyticsSerializer(Serializer):
    employer = serializers.IntegerField(allow_null=True)
    from_ = serializers.DateField()
    to = serializers.DateField()
    timezone = serializers.CharField()
    total = serializers.IntegerField()
    by_status = AnalyticsByStatusSerializer()
    by_type = AnalyticsByTypeSerializer()
    terminal = serializers.IntegerField()
    failure_ratio = serializers.FloatField(allow_null=True, help_text="(FAILED + REJECTED) ÷ terminal")
    received_to_active_seconds = AnalyticsLatencySerializer()
    premium = AnalyticsPremiumSerializer()
    top_rejection_classes = AnalyticsRejectionClassSerializer(many=True)
    hourly = AnalyticsHourSerializer(many=True)

    def get_fields(self) -> dict[str, serializers.Field]:  # type: ignore[type-arg]
        fields = super().get_fields()
        fields["from"] = fields.pop("from_")
        return fields
