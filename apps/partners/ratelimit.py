"""Per-API-key rate limits over fixed minute/hour/day windows, counted in the shared cache (Redis).

Stages, per window (see docs/adr/0005-rate-limits.md):
1. below 80% of the limit: allowed;
2. 80–100%: allowed, with a `RateLimit-Warning` header naming the window;
3. 100–110%: allowed only while the key is inside its 5-minute grace period, which starts at the first
   request over a limit and cannot restart for an hour; outside it → 429;
4. over 110%: 429 with `Retry-After` (seconds until that window resets).
Every response carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` for the window
closest to its limit, and `RateLimit-Policy` listing all windows.

Without the shared cache (Redis down) the same rules are counted in a process-local cache instead
(ADR 0026): a request is never refused, nor answered 500, because the counter store is away. Each fallback
decision increments `keel_rate_limit_fallback_total`, and one warning per process per minute says so.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core.cache import cache as shared_cache
from django.core.cache.backends.base import BaseCache
from django.core.cache.backends.locmem import LocMemCache
from prometheus_client import Counter

from apps.common.logging import WarnAtMostEvery

log = logging.getLogger(__name__)

FALLBACK_USED = Counter(
    "keel_rate_limit_fallback_total", "Rate-limit decisions counted in the process-local fallback (cache down)"
)
# Counters while the shared cache is away: per process, so N web processes admit up to N× a limit.
_local_cache = LocMemCache("keel-ratelimit-fallback", {"OPTIONS": {"MAX_ENTRIES": 100_000}})

WINDOWS: dict[str, int] = {"minute": 60, "hour": 3600, "day": 86400}
GRACE_COOLDOWN_SECONDS = 3600


@dataclass(frozen=True, slots=True)
class WindowUsage:
    window: str
    limit: int
    count: int
    reset_seconds: int

    @property
    def ratio(self) -> float:
        return self.count / self.limit if self.limit else math.inf


@dataclass(slots=True)
class RateDecision:
    allowed: bool
    usage: list[WindowUsage]
    warning: str | None = None
    in_grace: bool = False
    retry_after: int | None = None
    headers: dict[str, str] = field(default_factory=dict)


def _counter_key(prefix: str, window: str, bucket: int) -> str:
    return f"rl:{prefix}:{window}:{bucket}"


def _grace_key(prefix: str) -> str:
    return f"rl:{prefix}:grace"


def _increment(cache: BaseCache, key: str, ttl: int) -> int:
    try:
        return int(cache.incr(key))
    except ValueError:
        if cache.add(key, 1, timeout=ttl):
            return 1
        return int(cache.incr(key))


def _increment_all(cache: BaseCache, counters: list[tuple[str, int]]) -> list[int]:
    """Increment each (key, ttl) counter and return the new counts.

    On Redis this is one round trip: a pipeline of `INCR`s. A counter the pipeline created (count 1) gets its
    TTL in a second, rare round trip, once per window, so it expires with its window. Other caches (the file
    cache of `make run`) go key by key through the cache API."""
    client = getattr(cache, "client", None)
    if client is None or not hasattr(client, "get_client"):
        return [_increment(cache, key, ttl) for key, ttl in counters]
    redis = client.get_client(write=True)
    keys = [(cache.make_key(key), ttl) for key, ttl in counters]
    pipe = redis.pipeline(transaction=False)
    for full, _ in keys:
        pipe.incr(full)
    counts = [int(c) for c in pipe.execute()]
    fresh = [(full, ttl) for (full, ttl), count in zip(keys, counts, strict=True) if count == 1]
    if fresh:
        pipe = redis.pipeline(transaction=False)
        for full, ttl in fresh:
            pipe.expire(full, ttl)
        pipe.execute()
    return counts


_warn_unavailable = WarnAtMostEvery(log, "ratelimit.shared_cache_unavailable", seconds=60.0)


def _warn_fallback(exc: BaseException) -> None:
    _warn_unavailable(error=f"{type(exc).__name__}: {exc}"[:300])


def rate_limit_hit(*, key_prefix: str, limits: dict[str, int], now: float | None = None) -> RateDecision:
    """Count one request for the key and decide whether it may proceed.

    Counted in the shared cache (Redis); if that fails for any reason, in the process-local fallback with the
    same rules (ADR 0026). Never raises for an unavailable cache."""
    try:
        return _decide(shared_cache, key_prefix=key_prefix, limits=limits, now=now)
    except Exception as exc:  # redis.ConnectionError, django-redis ConnectionInterrupted, timeouts, …
        FALLBACK_USED.inc()
        _warn_fallback(exc)
        return _decide(_local_cache, key_prefix=key_prefix, limits=limits, now=now)


def _decide(cache: BaseCache, *, key_prefix: str, limits: dict[str, int], now: float | None) -> RateDecision:
    now = time.time() if now is None else now
    buckets = {window: int(now // size) for window, size in WINDOWS.items()}
    counts = _increment_all(
        cache, [(_counter_key(key_prefix, window, buckets[window]), size + 60) for window, size in WINDOWS.items()]
    )
    usage: list[WindowUsage] = []
    for (window, size), count in zip(WINDOWS.items(), counts, strict=True):
        reset = max(1, math.ceil((buckets[window] + 1) * size - now))
        usage.append(WindowUsage(window=window, limit=limits[window], count=count, reset_seconds=reset))

    grace_ratio = settings.API_RATE_LIMIT_GRACE_RATIO
    over_hard = [u for u in usage if u.count > u.limit * grace_ratio]
    over_soft = [u for u in usage if u.limit < u.count <= u.limit * grace_ratio]
    decision = RateDecision(allowed=True, usage=usage)

    if over_hard:
        decision.allowed = False
        decision.retry_after = max(u.reset_seconds for u in over_hard)
    elif over_soft:
        # The first request over a limit opens the grace period; it stays for the cooldown so a key
        # cannot get a fresh five minutes by pausing briefly.
        cache.add(_grace_key(key_prefix), now, timeout=GRACE_COOLDOWN_SECONDS)
        started = cache.get(_grace_key(key_prefix), now)
        if now - float(started) <= settings.API_RATE_LIMIT_GRACE_SECONDS:
            decision.in_grace = True
            decision.warning = (
                f"over the per-{over_soft[0].window} limit; grace period ends in "
                f"{int(settings.API_RATE_LIMIT_GRACE_SECONDS - (now - float(started)))}s"
            )
        else:
            decision.allowed = False
            decision.retry_after = max(u.reset_seconds for u in over_soft)
    if decision.allowed and decision.warning is None:
        near = [u for u in usage if u.ratio >= settings.API_RATE_LIMIT_WARNING_RATIO]
        if near:
            worst = max(near, key=lambda u: u.ratio)
            decision.warning = f"{int(worst.ratio * 100)}% of the per-{worst.window} limit used"

    worst = max(usage, key=lambda u: u.ratio)
    decision.headers = {
        "RateLimit-Limit": str(worst.limit),
        "RateLimit-Remaining": str(max(0, worst.limit - worst.count)),
        "RateLimit-Reset": str(worst.reset_seconds),
        "RateLimit-Policy": ", ".join(f"{u.limit};w={WINDOWS[u.window]}" for u in usage),
    }
    if decision.warning:
        decision.headers["RateLimit-Warning"] = decision.warning
    if decision.retry_after is not None:
        decision.headers["Retry-After"] = str(decision.retry_after)
    return decision


def rate_limit_reset(*, key_prefix: str, now: float | None = None) -> None:
    """Operators' reset: forget the key's current counters and its grace period."""
    now = time.time() if now is None else now
    keys = [_counter_key(key_prefix, w, int(now // size)) for w, size in WINDOWS.items()]
    try:
        shared_cache.delete_many([*keys, _grace_key(key_prefix)])
    except Exception as exc:  # the shared cache is down: its counters expire with their windows anyway
        _warn_fallback(exc)
    _local_cache.delete_many([*keys, _grace_key(key_prefix)])
