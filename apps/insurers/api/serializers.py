from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apps.common.serializers import ModelSerializer
from apps.common.text import control_character_error
from apps.insurers.conf import gateway_setting
from apps.insurers.models import Insurer

# Ids are PostgreSQL bigints (BigAutoField): anything outside 1..2**63-1 can name no endorsement.
MAX_ID = 2**63 - 1
MAX_KEY_LENGTH = 255


class Unresolvable:
    """An id or key in a callback item that cannot name any endorsement (out of range, wrong type)."""

    def __repr__(self) -> str:
        return "UNRESOLVABLE"


UNRESOLVABLE = Unresolvable()


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_ID})
class EndorsementLookupIdField(serializers.Field):  # type: ignore[type-arg]
    """An endorsement id as the insurer sent it: an int in 1..2**63-1 (or its decimal digits), else
    `UNRESOLVABLE` — so the item answers 404 (SPEC §8) instead of failing the batch or the database."""

    def to_internal_value(self, data: Any) -> int | Unresolvable:
        if isinstance(data, str) and data.isascii() and data.isdigit() and len(data) <= 19:
            data = int(data)
        if isinstance(data, bool) or not isinstance(data, int) or not 1 <= data <= MAX_ID:
            return UNRESOLVABLE
        return data

    def to_representation(self, value: Any) -> Any:
        return value


@extend_schema_field(OpenApiTypes.STR)
class IdempotencyKeyLookupField(serializers.Field):  # type: ignore[type-arg]
    """The idempotency key Keel sent: a non-empty string of at most 255 characters, else `UNRESOLVABLE`."""

    def to_internal_value(self, data: Any) -> str | Unresolvable:
        if not isinstance(data, str) or not data or len(data) > MAX_KEY_LENGTH or control_character_error(data):
            return UNRESOLVABLE
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class InsurerCircuitSerializer(serializers.Serializer[dict[str, Any]]):
    insurer = serializers.CharField()
    state = serializers.ChoiceField(choices=["closed", "open", "half_open"])
    failure_count = serializers.IntegerField(min_value=0)
    opened_at = serializers.DateTimeField(allow_null=True)


class InsurerCallbackEventDataSerializer(serializers.Serializer[dict[str, Any]]):
    # Ill-typed or out-of-range ids are not a malformed callback: that item answers 404, the rest apply.
    idempotency_key = IdempotencyKeyLookupField(required=False, allow_null=True)
    endorsement_id = EndorsementLookupIdField(required=False, allow_null=True)
    insurer_reference = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")
    reason = serializers.CharField(max_length=2000, required=False, allow_blank=True, default="")

    def validate_insurer_reference(self, value: str) -> str:
        return _plain_text(value, allow_newlines=False)

    def validate_reason(self, value: str) -> str:
        return _plain_text(value, allow_newlines=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("idempotency_key") is None and attrs.get("endorsement_id") is None:
            raise serializers.ValidationError("Give idempotency_key or endorsement_id.")
        return attrs


def _plain_text(value: str, *, allow_newlines: bool) -> str:
    error = control_character_error(value, allow_newlines=allow_newlines)
    if error:
        raise serializers.ValidationError(error)
    return value


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
    status = serializers.IntegerField(
        help_text="200 (applied or already processed), 404 (unknown endorsement) or 409 (contradicts the "
        "endorsement's decided state: not applied, recorded as an insurer conflict)"
    )
    detail = serializers.CharField()
    endorsement_status = serializers.CharField(required=False, help_text="With 409: the endorsement's state now")
    conflict_id = serializers.IntegerField(required=False, help_text="With 409: the recorded insurer conflict")


class InsurerCallbackResponseSerializer(serializers.Serializer[dict[str, Any]]):
    results = InsurerCallbackItemResultSerializer(many=True)


# An insurer as partners see it in `GET /insurers` (the view lives with the employers API, where partners pick a
# policy's insurer). No docstring: it would become the OpenAPI component's description.
class InsurerSerializer(ModelSerializer):
    class Meta:
        model = Insurer
        fields = ("code", "name", "protocol", "is_active")
