"""What other apps import from the outbox besides its services: the message a consumer receives."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from django.db.models import TextChoices


class OutboxTopic(TextChoices):
    """Topics the outbox app writes itself (the other apps list theirs in their own `contracts.py`)."""

    # `make bench` (bench/outbox_relay.py, bench/webhooks.py): consumed by `bench_consumer.record_latency`.
    BENCH = "bench.outbox"


class MessageRow(Protocol):
    """The columns of a stored outbox row a `Message` is built from (an `OutboxMessage`, saved or not)."""

    pk: Any
    topic: str
    key: str | None
    payload: Any
    headers: Any
    attempts: int
    created_at: datetime
    lease_token: UUID | None


@dataclass(frozen=True, slots=True)
class Message:
    """What a consumer receives.

    `attempt` counts earlier failed deliveries (0 on the first). `headers["correlation_id"]` is the request or
    message id that wrote the row (bound into the consumer's logs). `lease_token` identifies the relay claim
    this delivery belongs to (the outbox's own bookkeeping; consumers ignore it).
    """

    id: int
    topic: str
    key: str | None
    payload: dict[str, Any]
    headers: dict[str, Any]
    attempt: int
    created_at: datetime
    lease_token: str | None = None

    def to_envelope(self) -> dict[str, Any]:
        """The JSON body of an `outbox.deliver` task."""
        return {
            "id": self.id,
            "topic": self.topic,
            "key": self.key,
            "payload": self.payload,
            "headers": self.headers,
            "attempt": self.attempt,
            "created_at": self.created_at.isoformat(),
            "lease_token": self.lease_token,
        }

    @classmethod
    def from_envelope(cls, envelope: dict[str, Any]) -> Message:
        return cls(
            id=int(envelope["id"]),
            topic=str(envelope["topic"]),
            key=envelope.get("key"),
            payload=dict(envelope.get("payload") or {}),
            headers=dict(envelope.get("headers") or {}),
            attempt=int(envelope.get("attempt") or 0),
            created_at=datetime.fromisoformat(str(envelope["created_at"])),
            lease_token=envelope.get("lease_token"),
        )

    @classmethod
    def from_row(cls, row: MessageRow, *, lease_token: str | None = None) -> Message:
        """The one way to build a consumer's `Message` from a stored row (relay claims, tools, tests).

        `lease_token` overrides the row's own (the relay passes the token of the claim it just made).
        """
        token = lease_token if lease_token is not None else (str(row.lease_token) if row.lease_token else None)
        return cls(
            id=row.pk,
            topic=row.topic,
            key=row.key,
            payload=row.payload,
            headers=row.headers,
            attempt=row.attempts,
            created_at=row.created_at,
            lease_token=token,
        )
