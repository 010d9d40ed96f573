from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apps.insurers.conf import gateway_setting


class InsurerCircuitSerializer(serializers.Serializer[dict[str, Any]]):
    insurer = serializers.CharField()
    state = serializers.ChoiceField(choices=["closed", "open", "half_open"])
    failure_count = serializers.IntegerField(min_value=0)
    opened_at = serializers.DateTimeField(allow_null=True)


class InsurerCallbackEventDataSerializer(serializers.Serializer[dict[str, Any]]):
    idempotency_key = serializers.CharField(max_length=255, required=False)
    endorsement_id = serializers.IntegerField(min_value=1, required=False)
    insurer_reference = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not attrs.get("idempotency_key") and attrs.get("endorsement_id") is None:
            raise serializers.ValidationError("Give idempotency_key or endorsement_id.")
        return attrs


EVENT_TYPES = ("endorsement.confirmed", "endorsement.rejected")


class InsurerCallbackEventSerializer(serializers.Serializer[dict[str, Any]]):
    # A plain string, not a ChoiceField: an enum named "type" would collide in the schema with the
    # endorsement `type` enum.
    type = serializers.CharField(help_text="`endorsement.confirmed` or `endorsement.rejected`")
    data = InsurerCallbackEventDataSerializer()  # type: ignore[assignment]  # the metaclass pops declared fields

    def validate_type(self, value: str) -> str:
        if value not in EVENT_TYPES:
            raise serializers.ValidationError(f"Must be one of: {', '.join(EVENT_TYPES)}.")
        return value


class InsurerCallbackBatchSerializer(serializers.Serializer[dict[str, Any]]):
    events = serializers.ListField(child=InsurerCallbackEventSerializer(), min_length=1)

    def validate_events(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        limit = int(gateway_setting("CALLBACK_MAX_EVENTS"))
        if len(value) > limit:
            raise serializers.ValidationError(f"At most {limit} events per callback.")
        return value


class InsurerCallbackItemResultSerializer(serializers.Serializer[dict[str, Any]]):
    index = serializers.IntegerField()
    status = serializers.IntegerField(help_text="200 (applied or already processed) or 404 (unknown endorsement)")
    detail = serializers.CharField()


class InsurerCallbackResponseSerializer(serializers.Serializer[dict[str, Any]]):
    results = InsurerCallbackItemResultSerializer(many=True)
