from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.common.serializers import Serializer
from apps.employers.contracts import Gender
from apps.reconciliation.contracts import RESOLUTION_ACTIONS
from apps.reconciliation.models import (
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
    percent = serializers.IntegerField(help_text="share of the run's policies pulled, 0–100")


class ReconciliationRunSerializer(Serializer):
    id = serializers.IntegerField(read_only=True)
    insurer = serializers.CharField(source="insurer.code", read_only=True)
    employer = serializers.IntegerField(source="employer_id", allow_null=True, read_only=True)
    policy = serializers.IntegerField(source="policy_id", allow_null=True, read_only=True)
    employers = serializers.ListField(source="employer_ids", child=serializers.IntegerField(), read_only=True)
    status = serializers.ChoiceField(choices=RunStatus.choices, read_only=True)
    cancel_requested_at = serializers.DateTimeField(allow_null=True, read_only=True)
    progress = serializers.SerializerMethodField()
    summary = serializers.DictField(child=serializers.IntegerField(), read_only=True)
    error = serializers.CharField(read_only=True)
    created_at = serializers.DateTimeField(read_only=True)
    finished_at = serializers.DateTimeField(allow_null=True, read_only=True)

    @extend_schema_field(ReconciliationProgressSerializer)
    def get_progress(self, run: ReconciliationRun) -> dict[str, Any]:
        percent = 100 if run.status == RunStatus.COMPLETED else 0
        if run.status != RunStatus.COMPLETED and run.policies_total:
            percent = min(99, run.policies_done * 100 // run.policies_total)
        return {
            "policies_total": run.policies_total,
            "policies_done": run.policies_done,
            "pages_pulled": run.pages_pulled,
            "rows_pulled": run.rows_pulled,
            "rows_matched": run.rows_matched,
            "percent": percent,
        }


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
    keel_value = serializers.JSONField(read_only=True, help_text="Keel's side: a value, a member, or paise")
    insurer_value = serializers.JSONField(read_only=True, help_text="the insurer's side")
    status = serializers.ChoiceField(choices=DiscrepancyStatus.choices, read_only=True)
    resolution_action = serializers.CharField(read_only=True)
    resolution_note = serializers.CharField(read_only=True)
    resolution_result = serializers.DictField(read_only=True)
    resolved_at = serializers.DateTimeField(allow_null=True, read_only=True)
    created_at = serializers.DateTimeField(read_only=True)


class DiscrepancyResolveInputSerializer(Serializer):
    action = serializers.ChoiceField(choices=[(a, a) for a in RESOLUTION_ACTIONS])
    note = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")
    gender = serializers.ChoiceField(
        choices=Gender.choices, required=False, help_text="create_addition only: the insurer does not send it"
    )
