from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.common.money import format_minor
from apps.common.serializers import Serializer
from apps.employers.contracts import Gender
from apps.reconciliation.contracts import MONEY_KINDS, RESOLUTION_ACTIONS, run_summary
from apps.reconciliation.models import (
    Discrepancy,
    DiscrepancyKind,
    DiscrepancySeverity,
    DiscrepancyStatus,
    ReconciliationRun,
    RunStatus,
)

MAX_ID = 9223372036854775807


class ReconciliationCreateInputSerializer(Serializer):
    insurer = serializers.SlugField(max_length=40, help_text="insurer code, e.g. sandbox-rest")
    employer = serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False)
    policy = serializers.IntegerField(min_value=1, max_value=MAX_ID, required=False, help_text="needs `employer`")


class ReconciliationProgressSerializer(Serializer):
    policies_total = serializers.IntegerField()
    policies_done = serializers.IntegerField()
    pages_pulled = serializers.IntegerField()
    rows_pulled = serializers.IntegerField()
    rows_matched = serializers.IntegerField()
    rows_expected = serializers.IntegerField(
        help_text="members the pull expects: the insurer's reported total per policy, else Keel's active members"
    )
    percent = serializers.IntegerField(
        help_text="0–100: 95 × rows pulled / rows_expected + 4 × rows matched / rows_expected while running, "
        "100 when completed (ADR 0045)"
    )


class ReconciliationSummarySerializer(Serializer):
    """A run's figures (`contracts.run_summary`), every key present; the `reconciliation.completed` partner event
    carries the same shape with one employer's share."""

    matched = serializers.IntegerField(help_text="members on both sides with every compared field equal")
    missing_at_insurer = serializers.IntegerField()
    missing_internally = serializers.IntegerField()
    field_mismatch = serializers.IntegerField(help_text="one per differing field of a member")
    amount_mismatch = serializers.IntegerField()
    charge_missing = serializers.IntegerField()
    accepted = serializers.IntegerField(
        help_text="differences an operator ignored or flagged for finance before, unchanged since: not written again"
    )


class ReconciliationRunSerializer(Serializer):
    id = serializers.IntegerField(read_only=True)
    insurer = serializers.CharField(source="insurer.code", read_only=True)
    employer = serializers.IntegerField(source="employer_id", allow_null=True, read_only=True)
    policy = serializers.IntegerField(source="policy_id", allow_null=True, read_only=True)
    employers = serializers.ListField(source="employer_ids", child=serializers.IntegerField(), read_only=True)
    status = serializers.ChoiceField(choices=RunStatus.choices, read_only=True)
    cancel_requested_at = serializers.DateTimeField(allow_null=True, read_only=True)
    resumes = serializers.IntegerField(
        read_only=True,
        help_text="times the run was queued again after its worker stopped (at most 3; it continues where it was)",
    )
    resumed_at = serializers.DateTimeField(allow_null=True, read_only=True)
    progress = serializers.SerializerMethodField()
    summary = serializers.SerializerMethodField(
        help_text="counts by kind, final once the run has ended (zeros while it runs)"
    )
    error = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    finished_at = serializers.DateTimeField(allow_null=True, read_only=True)

    @extend_schema_field(ReconciliationProgressSerializer)
    def get_progress(self, run: ReconciliationRun) -> dict[str, Any]:
        return {
            "policies_total": run.policies_total,
            "policies_done": run.policies_done,
            "pages_pulled": run.pages_pulled,
            "rows_pulled": run.rows_pulled,
            "rows_matched": run.rows_matched,
            "rows_expected": run.rows_expected,
            "percent": run.percent,
        }

    @extend_schema_field(ReconciliationSummarySerializer)
    def get_summary(self, run: ReconciliationRun) -> dict[str, int]:
        return run_summary(run.summary)


class DiscrepancySerializer(Serializer):
    id = serializers.IntegerField(read_only=True)
    run = serializers.IntegerField(source="run_id", read_only=True)
    employer = serializers.IntegerField(source="employer_id", read_only=True)
    policy = serializers.IntegerField(source="policy_id", read_only=True)
    employee_code = serializers.CharField(read_only=True)
    endorsement_id = serializers.IntegerField(allow_null=True, read_only=True)
    kind = serializers.ChoiceField(choices=DiscrepancyKind.choices, read_only=True)
    field = serializers.CharField(read_only=True)
    severity = serializers.ChoiceField(choices=DiscrepancySeverity.choices, read_only=True)
    keel_value = serializers.SerializerMethodField(
        help_text="Keel's side: a field's value, a member, or an amount; money as a decimal string in rupees"
    )
    insurer_value = serializers.SerializerMethodField(help_text="the insurer's side, in the same shape")
    status = serializers.ChoiceField(choices=DiscrepancyStatus.choices, read_only=True)
    resolution_action = serializers.CharField(read_only=True)
    resolution_note = serializers.CharField(read_only=True)
    resolution_result = serializers.SerializerMethodField(
        help_text="what the resolution did: the new endorsement's id, a resend's key and the insurer's answer, …"
    )
    resolved_at = serializers.DateTimeField(allow_null=True, read_only=True)
    created_at = serializers.DateTimeField(read_only=True)

    @extend_schema_field(serializers.JSONField(allow_null=True))
    def get_keel_value(self, discrepancy: Discrepancy) -> Any:
        return discrepancy_value_at_api(discrepancy, discrepancy.keel_value)

    @extend_schema_field(serializers.JSONField(allow_null=True))
    def get_insurer_value(self, discrepancy: Discrepancy) -> Any:
        return discrepancy_value_at_api(discrepancy, discrepancy.insurer_value)

    @extend_schema_field(serializers.DictField())
    def get_resolution_result(self, discrepancy: Discrepancy) -> dict[str, Any]:
        # Resends resolved before ADR 0057 stored a price in paise; money at the API is rupees.
        result = dict(discrepancy.resolution_result)
        for key in RESOLUTION_MONEY_KEYS & result.keys():
            result[key] = format_minor(int(result[key]))
        return result


RESOLUTION_MONEY_KEYS = frozenset({"premium_amount", "sum_insured"})


def discrepancy_value_at_api(discrepancy: Discrepancy, value: Any) -> Any:
    """One side of a discrepancy as the API shows it (SPEC §2: money as a decimal string in rupees, "1234.50";
    stored as integer paise): an amount of a money kind, a `sum_insured` field value, a member's `sum_insured`.
    Other values (names, ISO dates, None) pass unchanged."""
    if value is None:
        return None
    if discrepancy.kind in MONEY_KINDS or discrepancy.field == "sum_insured":
        return format_minor(int(value))
    if isinstance(value, dict) and value.get("sum_insured") is not None:
        return {**value, "sum_insured": format_minor(int(value["sum_insured"]))}
    return value


class DiscrepancyResolveInputSerializer(Serializer):
    action = serializers.ChoiceField(choices=[(a, a) for a in RESOLUTION_ACTIONS])
    note = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    gender = serializers.ChoiceField(
        choices=Gender.choices, required=False, help_text="create_addition only: the insurer does not send it"
    )
