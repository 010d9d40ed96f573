"""Consumer used only by bench/outbox_relay.py: records commit → consumer-start latency in Redis.

Imported by the benchmark's worker (`celery worker --include apps.outbox.bench_consumer`); never in
production (nothing imports it otherwise).
"""

from __future__ import annotations

import redis
from django.conf import settings
from django.utils import timezone

from apps.outbox.contracts import Message
from apps.outbox.registry import consumer

LATENCY_KEY = "keel:bench:outbox:latency"
_client = redis.Redis.from_url(settings.REDIS_URL) if settings.REDIS_URL else None


@consumer("bench.outbox", queue="bench", name="bench.latency")
def record_latency(message: Message) -> None:
    if _client is None or message.created_at is None or message.payload.get("warmup"):
        return
    _client.rpush(LATENCY_KEY, (timezone.now() - message.created_at).total_seconds())
