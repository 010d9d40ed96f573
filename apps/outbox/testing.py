"""Test helpers: drive the outbox by calling the relay and consumers directly (no eager Celery).

with temporary_consumer("test.event", handle):
    ...
    delivered = drain()
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from apps.outbox import registry
from apps.outbox.contracts import Message
from apps.outbox.delivery import deliver_envelope
from apps.outbox.relay import relay_once


def drain(*, max_rounds: int = 10_000, batch_size: int = 500) -> list[Message]:
    """Relay and deliver until nothing is due; returns the delivered messages in delivery order."""
    delivered: list[Message] = []
    batch: list[Message] = []
    for _ in range(max_rounds):
        batch.clear()
        if not relay_once(batch_size=batch_size, publish=lambda message, _queue: batch.append(message)):
            return delivered
        for message in list(batch):
            deliver_envelope(message.to_envelope())
            delivered.append(message)
    raise AssertionError("the outbox did not drain")


@contextmanager
def temporary_consumer(
    topic: str, handler: Callable[[Message], None], *, queue: str = "default", name: str | None = None
) -> Iterator[registry.Consumer]:
    """Register a consumer for the duration of a test; restores whatever was registered for the topic."""
    previous = registry.get(topic)
    registry.unregister(topic)
    spec = registry.register(topic, handler, queue=queue, name=name or f"test:{topic}")
    try:
        yield spec
    finally:
        registry.unregister(topic)
        if previous is not None:
            registry.register(previous.topic, previous.handler, queue=previous.queue, name=previous.name)
