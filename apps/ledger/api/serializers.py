from __future__ import annotations

from rest_framework import serializers

from apps.common.fields import MoneyField
from apps.common.serializers import ModelSerializer, Serializer
from apps.ledger.models import Direction, LedgerEntry, LedgerTransaction, TransactionKind
from apps.ledger.services import MAX_REFERENCE_LENGTH


class LedgerEmployerQuerySerializer(Serializer):
    refuse_unknown_fields = False  # a query string: `cursor`, `limit` and the other filters share it
    employer = serializers.IntegerField(min_value=1)


class LedgerEntriesQuerySerializer(LedgerEmployerQuerySerializer):
    since = serializers.DateTimeField(required=False, help_text="entries created at or after (ISO 8601)")
    until = serializers.DateTimeField(required=False, help_text="entries created before (ISO 8601)")

    def validate(self, attrs: dict[str, object]) -> dict[str, object]:
        since, until = attrs.get("since"), attrs.get("until")
        if since is not None and until is not None and since >= until:  # type: ignore[operator]
            raise serializers.ValidationError({"until": "Must be later than `since`."})
        return attrs


class LedgerBalanceSerializer(Serializer):
    employer = serializers.IntegerField(source="employer_id")
    currency = serializers.CharField()
    posted = MoneyField()
    held = MoneyField()
    available = MoneyField()
    low_balance = serializers.BooleanField()
    low_balance_threshold = MoneyField()
    runway_days = serializers.DecimalField(
        max_digits=12,
        decimal_places=1,
        coerce_to_string=False,
        allow_null=True,
        help_text="available ÷ average daily net debit (captures − refunds) over the last 30 days; "
        "null without debit history",
    )


class LedgerTopupInputSerializer(Serializer):
    employer = serializers.IntegerField(min_value=1)
    amount = MoneyField(min_minor=1)
    reference = serializers.CharField(
        max_length=MAX_REFERENCE_LENGTH,
        help_text="Your unique reference for this top-up (e.g. the bank transfer id). Repeating it returns the "
        "original transaction and changes nothing.",
    )


class LedgerTransactionSerializer(ModelSerializer):
    amount = MoneyField()
    kind = serializers.ChoiceField(choices=TransactionKind.choices)

    class Meta:
        model = LedgerTransaction
        fields = ("id", "employer", "kind", "reference", "amount", "endorsement_id", "created_at")
        read_only_fields = fields


class LedgerEntrySerializer(ModelSerializer):
    transaction_id = serializers.IntegerField()
    kind = serializers.ChoiceField(source="transaction.kind", choices=TransactionKind.choices)
    amount = MoneyField()
    direction = serializers.ChoiceField(choices=Direction.choices)
    balance_after = MoneyField(help_text="posted balance of the account right after this entry")
    endorsement_id = serializers.IntegerField(source="transaction.endorsement_id", allow_null=True)

    class Meta:
        model = LedgerEntry
        fields = (
            "id",
            "transaction_id",
            "kind",
            "amount",
            "direction",
            "balance_after",
            "endorsement_id",
            "created_at",
        )
        read_only_fields = fields
