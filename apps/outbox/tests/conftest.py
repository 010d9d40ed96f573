"""Fixtures for the outbox's own tests: temporary consumers, enqueueing, a thread-safe collecting publisher."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from django.db import transaction

from apps.outbox.contracts import Message
from apps.outbox.services import outbox_enqueue
from apps.outbox.testing import temporary_consumer

TOPIC = "test.event"


class Collector:
    """A `publish` for relay_once that records what was published; safe to share between relay threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: list[Message] = []

    def __call__(self, message: Message, queue: str) -> None:
        with self._lock:
            self.messages.append(message)

    @property
    def ids(self) -> list[int]:
        with self._lock:
            return [m.id for m in self.messages]

    def take(self) -> list[Message]:
        with self._lock:
            taken, self.messages = self.messages, []
        return taken


@pytest.fixture
def published() -> Collector:
    return Collector()


@pytest.fixture
def outbox_consumer() -> Iterator[Callable[..., None]]:
    """`outbox_consumer(topic, handler, queue="default")` registers a consumer until the test ends."""
    stack: list[object] = []

    def register(topic: str, handler: Callable[[Message], None], *, queue: str = "default") -> None:
        context = temporary_consumer(topic, handler, queue=queue)
        context.__enter__()
        stack.append(context)

    yield register
    while stack:
        stack.pop().__exit__(None, None, None)  # type: ignore[attr-defined]


def enqueue(n: int = 1, *, topic: str = TOPIC, key: str | None = None, start: int = 0) -> list[int]:
    """Write `n` events in one committed transaction; returns their ids."""
    with transaction.atomic():
        return [outbox_enqueue(topic=topic, payload={"n": start + i}, key=key).pk for i in range(n)]
