"""Topic → consumer registry. Apps register consumers in their own `handlers.py`, which the outbox's
AppConfig.ready() imports for every installed app (`autodiscover_modules("handlers")`).

    @consumer("ledger.low_balance", queue="ledger")
    def handle(message: Message) -> None: ...

Exactly one consumer per topic: a topic is a command to one place, and its inbox name is the consumer's.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from apps.outbox.contracts import Message

Handler = Callable[[Message], None]

# The relay's own queue (relay tasks); consumers name theirs.
RELAY_QUEUE = "outbox"


class DuplicateConsumerError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Consumer:
    topic: str
    queue: str
    name: str
    handler: Handler


_consumers: dict[str, Consumer] = {}


def register(topic: str, handler: Handler, *, queue: str, name: str | None = None) -> Consumer:
    """Register `handler` for `topic`. A second, different handler for a topic raises `DuplicateConsumerError`
    (re-registering the same function, as a re-imported module does, is a no-op)."""
    existing = _consumers.get(topic)
    if existing is not None:
        if existing.handler is handler and existing.queue == queue:
            return existing
        raise DuplicateConsumerError(f"topic {topic!r} already has a consumer: {existing.name}")
    spec = Consumer(
        topic=topic, queue=queue, name=name or f"{handler.__module__}.{handler.__qualname__}", handler=handler
    )
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
    """Every queue a worker must consume for the outbox to flow: the relay's and each consumer's."""
    return {RELAY_QUEUE} | {c.queue for c in _consumers.values()}


def topics() -> list[str]:
    return sorted(_consumers)
