from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Message:
    """What a consumer receives. `attempt` counts earlier failed deliveries (0 on the first)."""

    id: int
    topic: str
    key: str | None
    payload: dict[str, Any]
    headers: dict[str, Any] = field(default_factory=dict)
    attempt: int = 0
    created_at: datetime | None = None
    lease_token: str | None = None

    def to_envelope(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "topic": self.topic,
            "key": self.key,
            "payload": self.payload,
            "headers": self.headers,
            "attempt": self.attempt,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "lease_token": self.lease_token,
        }

    @classmethod
    def from_envelope(cls, envelope: dict[str, Any]) -> Message:
        created = envelope.get("created_at")
        return cls(
            id=int(envelope["id"]),
            topic=str(envelope["topic"]),
            key=envelope.get("key"),
            payload=dict(envelope.get("payload") or {}),
            headers=dict(envelope.get("headers") or {}),
            attempt=int(envelope.get("attempt") or 0),
            created_at=datetime.fromisoformat(created) if created else None,
            lease_token=envelope.get("lease_token"),
        )
