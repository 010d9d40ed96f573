"""Loan application API shapes. Money as decimal strings at the edge, integer paise inside."""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.common.fields import MoneyField
from apps.common.serializers import FieldsReusedPerThreadMixin, ModelSerializer, Serializer
from apps.loan_applications.models import (
    MAX_MONTHLY_INCOME,
    MAX_REQUESTED_AMOUNT,
    LoanApplication,
    LoanStatus,
    LoanType,
)
from apps.loan_applications.pan import pan_validation_error

MIN_AGE, MAX_AGE = 18, 100
# 10-digit Indian mobile number (starts 6–9), optionally written with the +91 country code.
PHONE_RE = re.compile(r"^(?:\+91[ -]?)?([6-9][0-9]{9})$")


def age_on(born: date, today: date) -> int:
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


class LoanApplicationCreateInputSerializer(FieldsReusedPerThreadMixin, Serializer):
    pan_number = serializers.CharField(
        max_length=10, min_length=10, help_text="Permanent Account Number, e.g. ABCDE1234F. Never returned."
    )
    first_name = serializers.CharField(max_length=100)
    last_name = serializers.CharField(max_length=100)
    date_of_birth = serializers.DateField(help_text="The applicant must be 18 to 100 years old.")
    email = serializers.EmailField(max_length=254)
    phone_number = serializers.CharField(
        max_length=16, help_text="10-digit Indian mobile number starting 6–9; an optional +91 prefix is accepted."
    )
    monthly_income = MoneyField(min_minor=1, max_minor=MAX_MONTHLY_INCOME)
    requested_amount = MoneyField(min_minor=1, max_minor=MAX_REQUESTED_AMOUNT)
    loan_type = serializers.ChoiceField(choices=LoanType.choices)
    consent = serializers.BooleanField(help_text="Must be true: the applicant consented to a soft credit check.")

    def validate_pan_number(self, value: str) -> str:
        if reason := pan_validation_error(value):
            raise serializers.ValidationError(reason)
        return value

    def validate_date_of_birth(self, value: date) -> date:
        age = age_on(value, timezone.localdate())
        if not MIN_AGE <= age <= MAX_AGE:
            raise serializers.ValidationError(f"The applicant must be {MIN_AGE} to {MAX_AGE} years old.")
        return value

    def validate_phone_number(self, value: str) -> str:
        match = PHONE_RE.fullmatch(value)
        if match is None:
            raise serializers.ValidationError("Enter a 10-digit Indian mobile number starting with 6, 7, 8 or 9.")
        return match.group(1)

    def validate_email(self, value: str) -> str:
        local, _, domain = value.rpartition("@")
        return f"{local}@{domain.lower()}"

    def validate_consent(self, value: bool) -> bool:
        if value is not True:
            raise serializers.ValidationError("The applicant's consent is required.")
        return value


class LoanApplicationAcceptedSerializer(Serializer):
    id = serializers.UUIDField()
    # Always PENDING on acceptance; GET the application for its progress.
    status = serializers.ChoiceField(choices=[(LoanStatus.PENDING.value, LoanStatus.PENDING.label)])


class LoanApplicationSerializer(ModelSerializer):
    pan_masked = serializers.SerializerMethodField()
    decision_reasons = serializers.ListField(child=serializers.CharField(), read_only=True)
    requested_amount = MoneyField(read_only=True)
    max_approved_amount = MoneyField(read_only=True, allow_null=True)

    class Meta:
        model = LoanApplication
        fields = (
            "id",
            "status",
            "pan_masked",
            "loan_type",
            "requested_amount",
            "credit_score",
            "decision_reasons",
            "max_approved_amount",
            "created_at",
            "decided_at",
        )
        read_only_fields = fields

    @extend_schema_field({"type": "string", "example": "XXXXX1234F", "description": "XXXXX + last five characters"})
    def get_pan_masked(self, obj: LoanApplication) -> str:
        masked: dict[Any, str] = self.context.get("pan_masked", {})
        return masked.get(obj.pk, "XXXXX?????")
