from __future__ import annotations

import pytest

from apps.outbox.models import OutboxMessage


@pytest.fixture
def outbox_topics():
    """Topics of the outbox rows written so far, in order."""

    def _topics(topic: str | None = None) -> list[str]:
        qs = OutboxMessage.objects.order_by("id")
        if topic is not None:
            qs = qs.filter(topic=topic)
        return list(qs.values_list("topic", flat=True))

    return _topics
