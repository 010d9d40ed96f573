"""The in-process cache of authenticated callers: API key or OAuth client → its principal (ADR 0054).

Every partner request used to read its key (or OAuth client) with its partner, then the key's employer binding:
two queries before the view began. This cache keeps what those reads found, **in the memory of each web
process**, for at most `API_PRINCIPAL_CACHE_SECONDS` (default 5, never more than `MAX_TTL_SECONDS`):

1. A hit is trusted only for that long: a key revoked, narrowed or re-bound by any process (an operator in the
   admin, `apikey_revoke` on another host) stops working everywhere within 5 s. The bound needs nothing but
   this process's clock, so it holds while Redis (or any shared cache) is down.
2. Explicit invalidation: every change of a key, its scopes, its employer binding, an OAuth client or a
   partner clears this process's cache at once and again when its transaction commits (the services call
   `principal_cache_clear`; the signals of `install_invalidation` catch admin saves and M2M changes). Other
   processes see the change when their entries expire, within the same 5 s.
3. What is cached is exactly what the database said; the secret is still verified against the stored hash on
   every request, and a key's expiry is still compared with the clock on every request.

Thread-safe (gunicorn threads share it); bounded to `MAX_ENTRIES` (the oldest entry is dropped first).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

from django.conf import settings
from django.db import transaction

MAX_TTL_SECONDS = 5.0
MAX_ENTRIES = 10_000


class PrincipalCache:
    """A small TTL map. `clock` returns seconds (monotonic); tests inject their own."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, max_entries: int = MAX_ENTRIES) -> None:
        self.clock = clock
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def ttl_seconds() -> float:
        """The setting, clamped to [0, MAX_TTL_SECONDS]; 0 turns the cache off."""
        configured = float(getattr(settings, "API_PRINCIPAL_CACHE_SECONDS", MAX_TTL_SECONDS))
        return max(0.0, min(configured, MAX_TTL_SECONDS))

    def get(self, key: Hashable) -> Any | None:
        """The value stored under `key` if it is younger than the TTL, else None (and the entry is dropped)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if self.clock() >= entry[0]:
                del self._entries[key]
                return None
            return entry[1]

    def put(self, key: Hashable, value: Any) -> None:
        """Store `value` until now + TTL (a TTL of 0 stores nothing)."""
        ttl = self.ttl_seconds()
        if ttl <= 0:
            return
        with self._lock:
            self._entries[key] = (self.clock() + ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


principal_cache = PrincipalCache()


def principal_cache_clear() -> None:
    """Forget every cached principal of this process now and, inside a transaction, again when it commits
    (a request that read the old rows between the two would otherwise keep them for a TTL)."""
    principal_cache.clear()
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(principal_cache.clear)


def _on_change(*args: Any, **kwargs: Any) -> None:
    principal_cache_clear()


def install_invalidation(*models: Any) -> None:
    """Clear the cache on every save or delete of `models` and every change of their M2M `employers` binding
    made through the relation (admin edits, `employers.set/add/remove/clear`). Called from the apps' `ready()`
    (employers installs it for `Employer`: a deleted employer leaves the bindings by a cascade that sends no
    signal); the services that write with `.update()` call `principal_cache_clear` themselves."""
    from django.db.models.signals import m2m_changed, post_delete, post_save

    for model in models:
        post_save.connect(_on_change, sender=model, weak=False, dispatch_uid=f"principal-cache-save-{model.__name__}")
        post_delete.connect(_on_change, sender=model, weak=False, dispatch_uid=f"principal-cache-del-{model.__name__}")
        binding = next((f for f in model._meta.many_to_many if f.name == "employers"), None)
        if binding is not None:
            through = binding.remote_field.through
            uid = f"principal-cache-{model.__name__}-employers"
            m2m_changed.connect(_on_change, sender=through, weak=False, dispatch_uid=uid)
