from __future__ import annotations

import binascii
import json
from collections.abc import Callable
from typing import Any

import standardwebhooks
from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from apps.common.actors import Actor
from apps.common.admin import ReadOnlyAdmin
from apps.common.errors import Conflict
from apps.insurers.callback_secrets import callback_secret_mask
from apps.insurers.conflicts import insurer_conflict_accept, insurer_conflict_request_reversal
from apps.insurers.credentials import CredentialsError, decrypt_credentials, mask
from apps.insurers.models import (
    CallbackEvent,
    Insurer,
    InsurerConflict,
    InsurerSubmission,
    ResultFile,
    ResultFileStatus,
)
from apps.insurers.sandbox.models import SandboxApplied, SandboxConfig
from apps.insurers.services import insurer_callback_secret_set, insurer_credentials_set


class InsurerAdminForm(forms.ModelForm):  # type: ignore[type-arg]
    """Credentials are write-only: operators paste a JSON object to replace them (or tick clear); the stored
    value is encrypted (ADR 0029) and only its masked form is ever shown."""

    new_credentials = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "autocomplete": "off"}),
        help_text='Replace the credentials: a JSON object, e.g. {"sftp_password": "…", "sftp_host_key": '
        '"ssh-ed25519 AAAA…"}. Leave empty to keep the current ones.',
    )
    clear_credentials = forms.BooleanField(required=False)
    new_callback_secret = forms.CharField(
        required=False,
        strip=True,
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
        help_text="Replace the callback signing secret (whsec_…, as agreed with the insurer). It is sealed at rest "
        "and never shown again. Leave empty to keep the current one.",
    )
    clear_callback_secret = forms.BooleanField(required=False)

    class Meta:
        model = Insurer
        fields = (
            "code",
            "name",
            "protocol",
            "endpoint",
            "outbound_folder",
            "inbound_folder",
            "rate_limit_per_minute",
            "batch_size",
            "batch_window_seconds",
            "is_active",
        )

    def clean_new_credentials(self) -> dict[str, Any] | None:
        raw = self.cleaned_data.get("new_credentials") or ""
        if not raw.strip():
            return None
        try:
            value = json.loads(raw)
        except ValueError as exc:
            raise forms.ValidationError("Not valid JSON.") from exc
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise forms.ValidationError("Expected a JSON object of strings.")
        return value

    def clean_new_callback_secret(self) -> str:
        value = self.cleaned_data.get("new_callback_secret") or ""
        if value:
            try:
                standardwebhooks.Webhook(value)
            except (binascii.Error, ValueError) as exc:
                raise forms.ValidationError("Expected a whsec_ secret (base64 after the prefix).") from exc
        return value


@admin.register(Insurer)
class InsurerAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    form = InsurerAdminForm
    list_display = (
        "code",
        "name",
        "protocol",
        "is_active",
        "rate_limit_per_minute",
        "batch_size",
        "batch_window_seconds",
    )
    list_filter = ("protocol", "is_active")
    search_fields = ("code", "name")
    readonly_fields = ("credentials_masked", "callback_secret_masked")

    @admin.display(description="credentials (masked)")
    def credentials_masked(self, obj: Insurer) -> str:
        if not obj.credentials:
            return "—"
        try:
            return ", ".join(
                f"{k}: {v}" for k, v in mask(decrypt_credentials(obj.credentials, insurer_code=obj.code)).items()
            )
        except CredentialsError as exc:
            return str(exc)

    @admin.display(description="callback secret")
    def callback_secret_masked(self, obj: Insurer) -> str:
        return callback_secret_mask(obj.callback_secret, insurer_code=obj.code)

    def save_model(self, request: HttpRequest, obj: Insurer, form: Any, change: bool) -> None:
        values = form.cleaned_data.get("new_credentials")
        if form.cleaned_data.get("clear_credentials"):
            values = {}
        secret: str | None = form.cleaned_data.get("new_callback_secret") or None
        if form.cleaned_data.get("clear_callback_secret"):
            secret = ""
        super().save_model(request, obj, form, change)
        user = request.user
        actor = Actor.operator(user_id=user.pk, username=user.get_username(), ip=request.META.get("REMOTE_ADDR"))
        if values is not None:
            insurer_credentials_set(insurer=obj, values=values, actor=actor)
        if secret is not None:
            insurer_callback_secret_set(insurer=obj, plaintext=secret, actor=actor)


@admin.register(InsurerSubmission)
class InsurerSubmissionAdmin(ReadOnlyAdmin):
    list_display = ("id", "insurer", "endorsement_id", "kind", "last_outcome", "attempts", "sent_at", "responded_at")
    list_filter = ("last_outcome", "insurer", "rejection_class")
    search_fields = ("=endorsement_id", "=idempotency_key", "insurer_reference")
    date_hierarchy = "sent_at"


@admin.register(CallbackEvent)
class CallbackEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "insurer", "webhook_id", "item_index", "event_type", "outcome", "published", "received_at")
    list_filter = ("insurer", "event_type", "published")
    search_fields = ("=webhook_id", "insurer_reference")
    date_hierarchy = "received_at"


@admin.register(SandboxConfig)
class SandboxConfigAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Test tooling: operators and developers may edit it freely."""

    list_display = ("code", "mode", "latency_ms", "failure_rate", "callback_url", "updated_at")
    exclude = ("callback_secret",)  # sealed (ADR 0044); set with the insurer's secret by `sandbox_register`
    readonly_fields = ("callback_secret_masked",)

    @admin.display(description="callback secret")
    def callback_secret_masked(self, obj: SandboxConfig) -> str:
        return callback_secret_mask(obj.callback_secret, insurer_code=obj.code, owner="sandbox")


@admin.register(SandboxApplied)
class SandboxAppliedAdmin(ReadOnlyAdmin):
    list_display = ("id", "code", "endorsement_id", "kind", "outcome", "insurer_reference", "times_seen")
    list_filter = ("code", "outcome", "kind")
    search_fields = ("=idempotency_key", "=endorsement_id", "insurer_reference")


@admin.register(InsurerConflict)
class InsurerConflictAdmin(ReadOnlyAdmin):
    """Insurer results that contradict a decided state (issue 8, kind 11). Each action goes through
    `apps.insurers.conflicts` and is audited; a refusal (e.g. no funds to hold again) changes nothing."""

    list_display = (
        "id",
        "insurer",
        "endorsement_id",
        "insurer_outcome",
        "keel_status",
        "status",
        "source",
        "occurrences",
        "detected_at",
        "resolved_by",
    )
    list_filter = ("status", "insurer", "insurer_outcome", "keel_status", "source")
    search_fields = ("=endorsement_id", "insurer_reference")
    date_hierarchy = "detected_at"
    actions = ("accept_insurer_result", "request_reversal")

    def _each(
        self, request: HttpRequest, queryset: QuerySet[InsurerConflict], action: Callable[..., object], label: str
    ) -> None:
        actor = Actor.operator(
            user_id=request.user.pk, username=request.user.get_username(), ip=request.META.get("REMOTE_ADDR")
        )
        done, refused = 0, []
        for conflict in queryset.order_by("id"):
            try:
                action(conflict_id=conflict.pk, actor=actor)
                done += 1
            except Conflict as exc:
                refused.append(f"{conflict.pk}: {exc.detail}")
        self.message_user(request, f"{label}: {done} conflict(s).")
        if refused:
            self.message_user(request, "Refused — " + "; ".join(refused[:20]), level=messages.WARNING)

    @admin.action(description="Accept the insurer's result (hold and capture again / apply the rejection)")
    def accept_insurer_result(self, request: HttpRequest, queryset: QuerySet[InsurerConflict]) -> None:
        self._each(request, queryset, insurer_conflict_accept, "Accepted")

    @admin.action(description="Keep Keel's decision: ask the insurer to reverse its result")
    def request_reversal(self, request: HttpRequest, queryset: QuerySet[InsurerConflict]) -> None:
        self._each(request, queryset, insurer_conflict_request_reversal, "Reversal requested")


@admin.register(ResultFile)
class ResultFileAdmin(ReadOnlyAdmin):
    """Every result file imported or quarantined (SPEC §8): filter by status to see what needs an operator
    (the ops dashboard links here with `?status__exact=quarantined`). The time the file was handled is shown
    as "Imported at" or "Quarantined at" by its status (the column `imported_at` holds both), and the error
    says why a file was quarantined, naming the line where there is one."""

    list_display = (
        "id",
        "insurer",
        "name",
        "status",
        "error_summary",
        "row_count",
        "applied_count",
        "unknown_count",
        "imported_at_display",
        "quarantined_at_display",
    )
    list_filter = ("status", "insurer")
    search_fields = ("name", "=sha256", "batch_id", "error")
    date_hierarchy = "imported_at"
    readonly_fields = ("imported_at_display", "quarantined_at_display")
    fields = (
        "insurer",
        "name",
        "status",
        "error",
        "imported_at_display",
        "quarantined_at_display",
        "sha256",
        "batch_id",
        "row_count",
        "applied_count",
        "unknown_count",
        "manifest",
    )

    @admin.display(description="Error")
    def error_summary(self, obj: ResultFile) -> str:
        return obj.error if len(obj.error) <= 160 else obj.error[:159] + "…"

    @admin.display(description="Imported at", ordering="imported_at", empty_value="")
    def imported_at_display(self, obj: ResultFile) -> Any:
        return obj.imported_at if obj.status == ResultFileStatus.IMPORTED else None

    @admin.display(description="Quarantined at", ordering="imported_at", empty_value="")
    def quarantined_at_display(self, obj: ResultFile) -> Any:
        return obj.imported_at if obj.status == ResultFileStatus.QUARANTINED else None
