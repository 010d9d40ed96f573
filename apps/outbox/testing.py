"""Test helpers: drive the outbox by calling the relay and consumers directly (no eager Celery)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from apps.outbox import registry
from apps.outbox.contracts import Message
from apps.outbox.relay import relay_once
from apps.outbox.tasks import deliver_envelope


def drain(*, max_rounds: int = 10_000, batch_size: int = 500) -> list[Message]:
    """Relay and deliver until nothing is due; returns the delivered messages in delivery order."""
    delivered: list[Message] = []
    for _ in range(max_rounds):
        batch: list[Message] = []

        def collect(items: Sequence[tuple[Message, str]], batch: list[Message] = batch) -> int:
            batch.extend(m for m, _ in items)
            return len(items)

        if not relay_once(batch_size=batch_size, publish=collect):
            return delivered
        for message in batch:
            deliver_envelope(message.to_envelope())
            delivered.append(message)
    raise AssertionError("the outbox did not drain")


@contextmanager
def temporary_consumer(topic: str, handler: Callable[[Message], None], *, queue: str = "default") -> Iterator[None]:
    registry.register(topic, handler, queue=queue, name=f"test:{topic}")
    try:
        yield
    finally:
        registry.unregister(topic)
