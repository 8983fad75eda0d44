"""An in-process store: for tests, development and single-process deployments.

Entries live in a dict guarded by a lock, so it is safe across threads but not across
processes: with several workers, replay records and sessions are not shared. Use Redis there.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .base import check_entry

#: How often (in seconds of the store's clock) a write also purges every expired entry, so
#: keys that are never read again do not pile up.
SWEEP_INTERVAL = 60.0


class MemoryStore:
    """A thread-safe dict of ``key -> (value, deadline)`` that honours TTLs.

    Expired entries are invisible at once, removed when next touched, and swept in bulk every
    :data:`SWEEP_INTERVAL` seconds. ``clock`` is a parameter so tests can move time on
    without sleeping.

    ::

        store = MemoryStore(key_prefix="myapp:")
        store.set("session-id", b"...", ttl=300)
    """

    def __init__(
        self, *, key_prefix: str = "hybrid:", clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.key_prefix = key_prefix
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[bytes, float]] = {}
        self._next_sweep = clock() + SWEEP_INTERVAL

    def set(self, key: str, value: bytes, ttl: int) -> None:
        check_entry(value, ttl)
        with self._lock:
            now = self._clock()
            self._sweep(now)
            self._entries[self.key_prefix + key] = (value, now + ttl)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._live_value(self.key_prefix + key, self._clock())

    def delete(self, key: str) -> bool:
        with self._lock:
            now = self._clock()
            present = self._live_value(self.key_prefix + key, now) is not None
            self._entries.pop(self.key_prefix + key, None)
            return present

    def add(self, key: str, value: bytes, ttl: int) -> bool:
        check_entry(value, ttl)
        with self._lock:
            now = self._clock()
            self._sweep(now)
            if self._live_value(self.key_prefix + key, now) is not None:
                return False
            self._entries[self.key_prefix + key] = (value, now + ttl)
            return True

    def ping(self) -> None:
        """Always reachable."""

    def close(self) -> None:
        with self._lock:
            self._entries.clear()

    def _live_value(self, full_key: str, now: float) -> bytes | None:
        # Caller holds the lock. An expired entry is dropped here, on access.
        entry = self._entries.get(full_key)
        if entry is None:
            return None
        value, deadline = entry
        if now >= deadline:
            del self._entries[full_key]
            return None
        return value

    def _sweep(self, now: float) -> None:
        # Caller holds the lock. O(n), but at most once per SWEEP_INTERVAL.
        if now < self._next_sweep:
            return
        self._next_sweep = now + SWEEP_INTERVAL
        expired = [key for key, (_, deadline) in self._entries.items() if now >= deadline]
        for key in expired:
            del self._entries[key]
