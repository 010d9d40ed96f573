"""Live-stream test helpers (pytest plugin, registered in `apps/conftest.py`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture
def fresh_hub(settings: Any) -> Iterator[Any]:
    """A hub per test (the module one would keep a cursor from another test's database), polling every 50 ms,
    stopped after it. Use with `pytest.mark.usefixtures("fresh_hub")` in the stream tests."""
    from apps.live import hub as hub_module

    settings.EVENT_STREAM_POLL_SECONDS = 0.05
    hub = hub_module.EventHub()
    previous, hub_module.hub = hub_module.hub, hub
    yield hub
    hub.stop()
    hub_module.hub = previous
