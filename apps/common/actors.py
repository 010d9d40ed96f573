"""Who did something. Every service that changes state takes an `Actor` and writes it into the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from apps.common.logging import current_correlation_id

ActorKind = Literal["api_key", "user", "system"]


@dataclass(frozen=True, slots=True)
class Actor:
    kind: ActorKind
    # API key prefix, operator username or task/command name. Never a secret.
    label: str
    partner_id: int | None = None
    user_id: int | None = None
    ip: str | None = None
    request_id: str | None = None

    @classmethod
    def system(cls, name: str) -> Actor:
        return cls(kind="system", label=name, request_id=current_correlation_id())

    @classmethod
    def operator(cls, *, user_id: int | None, username: str, ip: str | None = None) -> Actor:
        return cls(kind="user", label=username, user_id=user_id, ip=ip, request_id=current_correlation_id())

    @property
    def display(self) -> str:
        return f"{self.kind}:{self.label}"
