from __future__ import annotations

from celery import shared_task

from apps.common.idempotency import idempotency_purge_expired


@shared_task(name="common.idempotency_purge", ignore_result=True)
def idempotency_purge() -> int:
    """Beat, hourly: delete Idempotency-Key records past their 24 h, in bounded batches."""
    total = 0
    while deleted := idempotency_purge_expired(batch_size=5000):
        total += deleted
        if total >= 500_000:
            break
    return total
