"""RSA-2048 session keys generated ahead of the handshakes that take them."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from .core import rsa

DEFAULT_QUIET_PERIOD = 0.25
"""Seconds without a ``take`` before the pool refills: a burst of handshakes is served first."""


class KeyPool:
    """A few RSA-2048 keys generated ahead of time by a background thread.

    Key generation takes ~30-100 ms of a core; the pool keeps it off the handshake's path.
    ``take`` never waits for the thread: when the pool is empty it generates inline.

    The refill waits until the worker has been *quiet* (no ``take``) for ``quiet_period``
    seconds, and looks again after each key it makes. So a burst of handshakes is served from
    the pool without a key generation competing for the CPU; the pool is refilled in the lull
    after it. Under a steady stream of handshakes closer together than ``quiet_period`` the pool
    drains and each handshake makes its key inline, which is what it would cost anyway.

    The thread starts on first use (and again after a fork: inherited keys would be shared with
    the parent), so importing or configuring the app starts nothing. ``background=False`` starts
    no thread at all; :meth:`fill_step` then refills one step at a time (tests, or a server's
    own idle hook).

    Usage::

        pool = KeyPool(16)          # per process: size it for the largest burst one worker takes
        private_key = pool.take()

    :param size: keys kept ready (0 or less: every ``take`` generates inline).
    :param generate: makes one key (default: RSA-2048).
    :param quiet_period: seconds without a ``take`` before a refill step.
    :param clock: monotonic seconds, for tests.
    """

    def __init__(
        self,
        size: int = 4,
        *,
        generate: Callable[[], rsa.PrivateKey] | None = None,
        quiet_period: float = DEFAULT_QUIET_PERIOD,
        clock: Callable[[], float] = time.monotonic,
        background: bool = True,
    ) -> None:
        if quiet_period < 0:
            raise ValueError("the quiet period must be >= 0")
        self.size = size
        self.quiet_period = quiet_period
        self._generate = generate or rsa.generate_private_key
        self._clock = clock
        self._background = background
        self._keys: list[rsa.PrivateKey] = []
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._keys_pid = os.getpid()  # the process whose keys ``_keys`` holds
        self._thread_pid: int | None = None  # the process whose thread fills the pool
        self._last_take = float("-inf")

    def __len__(self) -> int:
        """Keys ready now."""
        with self._lock:
            return len(self._keys)

    def start(self) -> None:
        """Start filling now rather than at the first handshake (in each process that calls it).

        For a server that wants each worker's pool full before its first burst: call it in the
        worker (after the fork), e.g. from gunicorn's ``post_worker_init`` hook, on the pool
        given to the :class:`~flask_hybrid.sessions.SessionManager`.
        """
        if self.size > 0:
            self._ensure_thread()

    def take(self) -> rsa.PrivateKey:
        """A fresh private key: from the pool, or generated inline when it is empty."""
        if self.size <= 0:
            return self._generate()
        self._ensure_thread()
        with self._lock:
            self._drop_inherited_keys()
            self._last_take = self._clock()
            key = self._keys.pop() if self._keys else None
        self._wanted.set()
        return key if key is not None else self._generate()

    def fill_step(self) -> float | None:
        """Add one key if the pool is short and the worker has been quiet long enough.

        Returns the seconds to wait before the next step (0.0 right after adding a key), or
        ``None`` when the pool is full.
        """
        with self._lock:
            self._drop_inherited_keys()
            if len(self._keys) >= self.size:
                return None
            quiet_for = self._clock() - self._last_take
        if quiet_for < self.quiet_period:
            return self.quiet_period - quiet_for
        key = self._generate()
        with self._lock:
            if len(self._keys) < self.size:
                self._keys.append(key)
        return 0.0

    def _drop_inherited_keys(self) -> None:
        # Keys inherited across a fork would be shared with the parent. Called under the lock.
        if self._keys_pid != os.getpid():
            self._keys_pid = os.getpid()
            self._keys = []

    def _ensure_thread(self) -> None:
        if not self._background or self._thread_pid == os.getpid():
            return
        with self._lock:
            if self._thread_pid == os.getpid():
                return
            self._thread_pid = os.getpid()
            self._wanted.set()
            threading.Thread(target=self._fill, name="flask-hybrid-key-pool", daemon=True).start()

    def _fill(self) -> None:
        while True:
            self._wanted.wait()
            wait = self.fill_step()
            if wait is None:
                with self._lock:
                    if len(self._keys) >= self.size:  # a take in between sets it again
                        self._wanted.clear()
            elif wait > 0:
                time.sleep(wait)
