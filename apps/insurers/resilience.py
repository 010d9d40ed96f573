"""Per-insurer outbound rate limit and circuit breaker, shared by every worker.

Both keep their state in Redis when `REDIS_URL` is set (a token bucket in a Lua script; pybreaker's
`CircuitRedisStorage`) and in Django's cache otherwise, so the embedded set-up (`make run`: one web and one
worker process over a file cache) still shares one state between processes and the API shows what the worker
sees.
"""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pybreaker
import redis
import structlog
from django.core.cache import cache

from apps.insurers.conf import gateway_setting, key_prefix, redis_url
from apps.insurers.contracts import InsurerCallDeferred, TransientInsurerError
from apps.insurers.metrics import CALL_SECONDS, CALLS

log = structlog.get_logger(__name__)
T = TypeVar("T")

_redis_clients: dict[str, redis.Redis] = {}
_redis_lock = threading.Lock()


def _redis() -> redis.Redis | None:
    url = redis_url()
    if not url:
        return None
    with _redis_lock:
        client = _redis_clients.get(url)
        if client is None:
            client = redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1)
            _redis_clients[url] = client
        return client


# --- Rate limit --------------------------------------------------------------------------------------

# Token bucket: capacity = the per-minute limit, refilled continuously at limit/60 tokens per second. Redis'
# own clock is the only clock, so workers on hosts with skewed clocks still share one bucket correctly.
# Returns {allowed (0|1), seconds to wait (string, Lua numbers would be truncated to integers)}.
_TOKEN_BUCKET_LUA = """
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) + tonumber(now_parts[2]) / 1000000
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = capacity
  ts = now
end
tokens = math.min(capacity, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / rate) + 60)
return {allowed, tostring(wait)}
"""
_scripts: dict[int, Any] = {}


def rate_limit_acquire(*, insurer_code: str, per_minute: int) -> None:
    """Take one request token for this insurer or raise `InsurerCallDeferred` with the wait in seconds.

    1. With Redis: one atomic Lua call (token bucket, burst up to `per_minute`).
    2. Without Redis: a fixed one-minute window counted with `cache.incr` (coarser, still shared).
    3. If Redis is unreachable the call is allowed (logged): the insurer's own 429 and our circuit breaker
       still protect it, and a Redis outage must not stop every insurer exchange.
    """
    if per_minute <= 0:
        raise InsurerCallDeferred(f"outbound rate limit for {insurer_code} is 0", retry_after=60.0)
    client = _redis()
    if client is not None:
        try:
            script = _scripts.get(id(client))
            if script is None:
                script = _scripts[id(client)] = client.register_script(_TOKEN_BUCKET_LUA)
            allowed, wait = script(
                keys=[f"{key_prefix()}:ratelimit:{insurer_code}"], args=[per_minute, per_minute / 60, 1]
            )
        except redis.RedisError:
            log.warning("insurers.rate_limit_unavailable", insurer=insurer_code, exc_info=True)
            return
        if int(allowed) != 1:
            retry_after = max(float(wait), 0.001)
            raise InsurerCallDeferred(
                f"outbound rate limit for {insurer_code} reached ({per_minute}/min)", retry_after=retry_after
            )
        return
    now = time.time()
    window = int(now // 60)
    key = f"{key_prefix()}:ratelimit:{insurer_code}:{window}"
    try:
        cache.add(key, 0, timeout=120)
        try:
            count = cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.set(key, 1, timeout=120)
            count = 1
    except Exception:  # the cache is down: allowed, as with Redis above
        log.warning("insurers.rate_limit_unavailable", insurer=insurer_code, exc_info=True)
        return
    if count > per_minute:
        raise InsurerCallDeferred(
            f"outbound rate limit for {insurer_code} reached ({per_minute}/min)",
            retry_after=max((window + 1) * 60 - now, 0.001),
        )


# --- Circuit breaker -----------------------------------------------------------------------------------


class CircuitCacheStorage(pybreaker.CircuitBreakerStorage):
    """pybreaker state in Django's cache, for deployments without Redis (shared across processes when the
    cache is, e.g. the file cache of `make run`)."""

    def __init__(self, namespace: str) -> None:
        super().__init__("cache")
        self._ns = namespace

    def _k(self, name: str) -> str:
        return f"{self._ns}:{name}"

    @property
    def state(self) -> str:
        return str(cache.get(self._k("state")) or pybreaker.STATE_CLOSED)

    @state.setter
    def state(self, state: str) -> None:
        cache.set(self._k("state"), str(state), timeout=None)

    def _incr(self, name: str) -> None:
        key = self._k(name)
        cache.add(key, 0, timeout=None)
        try:
            cache.incr(key)
        except ValueError:
            cache.set(key, 1, timeout=None)

    def increment_counter(self) -> None:
        self._incr("fail_counter")

    def reset_counter(self) -> None:
        cache.set(self._k("fail_counter"), 0, timeout=None)

    def increment_success_counter(self) -> None:
        self._incr("success_counter")

    def reset_success_counter(self) -> None:
        cache.set(self._k("success_counter"), 0, timeout=None)

    @property
    def counter(self) -> int:
        return int(cache.get(self._k("fail_counter")) or 0)

    @property
    def success_counter(self) -> int:
        return int(cache.get(self._k("success_counter")) or 0)

    @property
    def opened_at(self) -> datetime | None:
        value = cache.get(self._k("opened_at"))
        return datetime.fromtimestamp(float(value), tz=UTC) if value is not None else None

    @opened_at.setter
    def opened_at(self, now: datetime) -> None:
        cache.set(self._k("opened_at"), now.timestamp(), timeout=None)


_breakers: dict[tuple[str, int, float, str, int], pybreaker.CircuitBreaker] = {}
_breaker_lock = threading.Lock()


def _not_transient(exc: BaseException) -> bool:
    # Only an unavailable insurer counts as a failure; a bug in our code must not open the circuit.
    return not isinstance(exc, TransientInsurerError)


def circuit_breaker_for(insurer_code: str) -> pybreaker.CircuitBreaker:
    """The breaker of one insurer. Instances are per process; their state lives in the shared storage."""
    fail_max = int(gateway_setting("CIRCUIT_FAIL_MAX"))
    reset = float(gateway_setting("CIRCUIT_RESET_SECONDS"))
    successes = max(1, int(gateway_setting("HALF_OPEN_SUCCESSES")))
    url = redis_url()
    cache_key = (insurer_code, fail_max, reset, url, successes)
    with _breaker_lock:
        breaker = _breakers.get(cache_key)
        if breaker is not None:
            return breaker
        storage: pybreaker.CircuitBreakerStorage
        namespace = f"{key_prefix()}:circuit:{insurer_code}"
        client = _redis()
        if client is not None:
            try:
                storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=namespace)
            except redis.RedisError:
                log.warning("insurers.circuit_storage_unavailable", insurer=insurer_code, exc_info=True)
                # Not cached: the next call tries Redis again.
                return pybreaker.CircuitBreaker(
                    fail_max=fail_max, reset_timeout=reset, exclude=[_not_transient], success_threshold=successes
                )
        else:
            storage = CircuitCacheStorage(namespace)
        breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset,
            exclude=[_not_transient],
            state_storage=storage,
            name=insurer_code,
            throw_new_error_on_trip=False,
            success_threshold=successes,
        )
        _breakers[cache_key] = breaker
        return breaker


def _open_remaining(breaker: pybreaker.CircuitBreaker) -> float:
    opened_at = breaker._state_storage.opened_at
    if opened_at is None:
        return float(breaker.reset_timeout)
    remaining = (opened_at + timedelta(seconds=breaker.reset_timeout) - datetime.now(UTC)).total_seconds()
    return max(remaining, 0.0)


# How long a half-open probe slot stays taken if its holder dies without releasing it.
PROBE_SLOT_SECONDS = 30
# A caller that found every probe slot taken tries again after this long.
PROBE_BUSY_RETRY_SECONDS = 1.0


def _probing(breaker: pybreaker.CircuitBreaker) -> bool:
    """Half-open now, or open with its open time elapsed (the next call would make it half-open)."""
    state = str(breaker._state_storage.state)
    return state == pybreaker.STATE_HALF_OPEN or (state == pybreaker.STATE_OPEN and _open_remaining(breaker) <= 0)


def _take_probe_slot(insurer_code: str) -> str | None:
    """One of HALF_OPEN_PROBES shared slots (cache `add`, first writer wins), or None when all are taken.
    With the cache down the probe is allowed: the breaker still re-opens on its failure."""
    slots = max(1, int(gateway_setting("HALF_OPEN_PROBES")))
    for slot in range(slots):
        key = f"{key_prefix()}:circuit:{insurer_code}:probe:{slot}"
        try:
            if cache.add(key, 1, timeout=PROBE_SLOT_SECONDS):
                return key
        except Exception:
            log.warning("insurers.probe_slot_unavailable", insurer=insurer_code, exc_info=True)
            return ""
    return None


def guarded_call(insurer_code: str, func: Any, *args: Any) -> Any:
    """Run `func` through the insurer's breaker (SPEC §8; ADR 0025).

    1. Open circuit: fail fast with `InsurerCallDeferred` (retry_after = the time left until half-open),
       nothing sent.
    2. Half-open (the open time has passed): only HALF_OPEN_PROBES calls at a time go through as probes;
       the others are deferred for a second. HALF_OPEN_SUCCESSES successful probes in a row close the
       circuit; a failed probe opens it again for the full open time. Traffic comes back gradually instead of
       a whole backlog hitting an insurer that has just recovered.
    3. Closed: the call goes through; CIRCUIT_FAIL_MAX transient failures in a row open it.
    """
    breaker = circuit_breaker_for(insurer_code)
    started = time.perf_counter()
    slot: str | None = ""
    if _probing(breaker):
        slot = _take_probe_slot(insurer_code)
        if slot is None:
            _observe_call(insurer_code, "circuit_open", started)
            raise InsurerCallDeferred(
                f"circuit half-open for insurer {insurer_code}: probes in progress",
                retry_after=PROBE_BUSY_RETRY_SECONDS,
            )
    called = False

    def attempt(*call_args: Any) -> Any:
        nonlocal called
        called = True
        return func(*call_args)

    outcome = "error"
    try:
        result = breaker.call(attempt, *args)
        outcome = "ok"
        return result
    except pybreaker.CircuitBreakerError:
        # Also raised by the call whose failure trips the breaker: that one was made (`called`), an error.
        outcome = "error" if called else "circuit_open"
        retry_after = _open_remaining(breaker)
        raise InsurerCallDeferred(
            f"circuit open for insurer {insurer_code}", retry_after=math.ceil(retry_after * 1000) / 1000 or 0.001
        ) from None
    finally:
        _observe_call(insurer_code, outcome, started)
        if slot:
            try:
                cache.delete(slot)
            except Exception:
                log.warning("insurers.probe_slot_unavailable", insurer=insurer_code, exc_info=True)


def _observe_call(insurer_code: str, outcome: str, started: float) -> None:
    """`keel_insurer_calls_total` and `keel_insurer_call_seconds` (apps/insurers/metrics.py), in this process."""
    CALLS.labels(insurer_code, outcome).inc()
    CALL_SECONDS.labels(insurer_code, outcome).observe(time.perf_counter() - started)


def circuit_state(insurer_code: str) -> dict[str, Any]:
    """{state: closed|open|half_open, failure_count, opened_at} without changing anything.

    pybreaker moves an open circuit to half-open lazily, on the next call after the reset timeout; this
    reports `half_open` as soon as that timeout has passed, since that is what the next call will find.
    """
    breaker = circuit_breaker_for(insurer_code)
    storage = breaker._state_storage
    raw = storage.state
    opened_at = storage.opened_at
    state = {"closed": "closed", "open": "open", "half-open": "half_open"}.get(raw, raw)
    if state == "open" and _open_remaining(breaker) <= 0:
        state = "half_open"
    return {
        "state": state,
        "failure_count": storage.counter,
        "opened_at": opened_at if state != "closed" else None,
    }


def circuit_reset(insurer_code: str) -> None:
    """Close the circuit (operators, tests)."""
    breaker = circuit_breaker_for(insurer_code)
    breaker.close()
