"""Topic → consumer registry. Apps register consumers in their `handlers.py` (autodiscovered at start-up)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from apps.outbox.contracts import Message

Handler = Callable[[Message], None]


@dataclass(frozen=True, slots=True)
class Consumer:
    topic: str
    queue: str
    name: str
    handler: Handler


_consumers: dict[str, Consumer] = {}


def register(topic: str, handler: Handler, *, queue: str, name: str | None = None) -> Consumer:
    existing = _consumers.get(topic)
    if existing is not None and existing.handler is not handler:
        raise ValueError(f"topic {topic!r} already has a consumer: {existing.name}")
    spec = Consumer(topic=topic, queue=queue, name=name or f"{handler.__module__}.{handler.__name__}", handler=handler)
    _consumers[topic] = spec
    return spec


def unregister(topic: str) -> None:
    _consumers.pop(topic, None)


def consumer(topic: str, *, queue: str, name: str | None = None) -> Callable[[Handler], Handler]:
    """Decorator: `@consumer("ledger.low_balance", queue="ledger")` on `def handle(message) -> None`."""

    def decorate(handler: Handler) -> Handler:
        register(topic, handler, queue=queue, name=name)
        return handler

    return decorate


def get(topic: str) -> Consumer | None:
    return _consumers.get(topic)


def queues() -> set[str]:
    return {"outbox"} | {c.queue for c in _consumers.values()}


def topics() -> list[str]:
    return sorted(_consumers)
