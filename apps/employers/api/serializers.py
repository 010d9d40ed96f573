from __future__ import annotations

from decimal import Decimal
from typing import Any

from rest_framework import serializers

from apps.common.fields import MoneyField, RateField
from apps.common.serializers import ModelSerializer, Serializer
from apps.employers.models import Coverage, Employee, Employer, EmployerStatus, Policy


class EmployerSerializer(ModelSerializer):
    low_balance_threshold = MoneyField(required=False)

    class Meta:
        model = Employer
        fields = (
            "id",
            "name",
            "external_ref",
            "status",
            "low_balance_threshold",
            "velocity_limit_per_hour",
            "contact_email",
            "created_at",
            "updated_at",
        )
        read_only_fields = ("id", "created_at", "updated_at")


class EmployerCreateInputSerializer(Serializer):
    name = serializers.CharField(max_length=200)
    external_ref = serializers.CharField(max_length=100)
    status = serializers.ChoiceField(choices=EmployerStatus.choices, default=EmployerStatus.ACTIVE)
    low_balance_threshold = MoneyField(required=False, default=0)
    velocity_limit_per_hour = serializers.IntegerField(min_value=1, max_value=1_000_000, default=1000)
    contact_email = serializers.EmailField(required=False, default="", allow_blank=True)


class EmployerUpdateInputSerializer(Serializer):
    name = serializers.CharField(max_length=200, required=False)
    status = serializers.ChoiceField(choices=EmployerStatus.choices, required=False)
    low_balance_threshold = MoneyField(required=False)
    velocity_limit_per_hour = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False)
    contact_email = serializers.EmailField(required=False, allow_blank=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        unknown = set(self.initial_data) - set(self.fields)
        if unknown:
            raise serializers.ValidationError(dict.fromkeys(sorted(unknown), "This field cannot be changed."))
        return attrs


class PolicySerializer(ModelSerializer):
    insurer = serializers.SlugRelatedField(slug_field="code", read_only=True)  # type: ignore[var-annotated]
    default_sum_insured = MoneyField()
    premium_rate_per_mille = RateField()

    class Meta:
        model = Policy
        fields = (
            "id",
            "employer",
            "insurer",
            "policy_number",
            "start_date",
            "end_date",
            "currency",
            "premium_rate_per_mille",
            "default_sum_insured",
            "backdating_days",
            "created_at",
        )
        read_only_fields = fields


class PolicyCreateInputSerializer(Serializer):
    employer = serializers.IntegerField(min_value=1)
    insurer = serializers.CharField(max_length=40, help_text="insurer code, e.g. sandbox-rest")
    policy_number = serializers.CharField(max_length=64)
    start_date = serializers.DateField()
    end_date = serializers.DateField()
    premium_rate_per_mille = RateField(min_value=Decimal("0.0001"))
    default_sum_insured = MoneyField(min_minor=1)
    backdating_days = serializers.IntegerField(min_value=0, max_value=365, default=30)


class EmployeeSerializer(ModelSerializer):
    class Meta:
        model = Employee
        fields = (
            "id",
            "employer",
            "employee_code",
            "first_name",
            "last_name",
            "date_of_birth",
            "gender",
            "email",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields


class CoverageSerializer(ModelSerializer):
    employee_code = serializers.CharField(source="employee.employee_code", read_only=True)
    employer = serializers.IntegerField(source="policy.employer_id", read_only=True)
    sum_insured = MoneyField()

    class Meta:
        model = Coverage
        fields = (
            "id",
            "employer",
            "policy",
            "employee_code",
            "sum_insured",
            "start_date",
            "end_date",
            "status",
            "created_at",
            "updated_at",
        )
        read_only_fields = fields
