"""What other apps import from the outbox besides its services: the message a consumer receives."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


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
