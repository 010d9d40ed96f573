"""Consumer used only by bench/outbox_relay.py: records commit → consumer-start latency in Redis.

Registered by the outbox's AppConfig.ready() only in processes started with `KEEL_BENCH=1` (the benchmark
sets it for its Celery worker); nothing else imports it, so production never has the `bench.outbox` topic.
"""

from __future__ import annotations

import redis
from django.conf import settings
from django.utils import timezone

from apps.outbox.contracts import Message, OutboxTopic
from apps.outbox.registry import consumer

BENCH_QUEUE = "bench"
LATENCY_KEY = "keel:bench:outbox:latency"
_client = redis.Redis.from_url(settings.REDIS_URL) if settings.REDIS_URL else None


@consumer(OutboxTopic.BENCH, queue=BENCH_QUEUE, name="bench.latency")
def record_latency(message: Message) -> None:
    """First thing the consumer does: record how long since the row was written (inside its transaction)."""
    started = timezone.now()
    if _client is None or message.payload.get("warmup"):
        return
    _client.rpush(LATENCY_KEY, (started - message.created_at).total_seconds())
