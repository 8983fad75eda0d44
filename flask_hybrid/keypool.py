"""RSA-2048 session keys generated ahead of the handshakes that take them."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from .core import rsa


class KeyPool:
    """A few RSA-2048 keys generated ahead of time by a background thread.

    Key generation takes ~30-100 ms; the pool keeps it off the handshake's path. ``take`` never
    waits for the thread: when the pool is empty it generates inline. The thread starts on first
    use (and again after a fork), so importing or configuring the app starts nothing.
    """

    def __init__(self, size: int = 4, *, generate: Callable[[], rsa.PrivateKey] | None = None):
        self.size = size
        self._generate = generate or rsa.generate_private_key
        self._keys: list[rsa.PrivateKey] = []
        self._lock = threading.Lock()
        self._wanted = threading.Event()
        self._owner_pid: int | None = None

    def take(self) -> rsa.PrivateKey:
        if self.size <= 0:
            return self._generate()
        self._ensure_thread()
        with self._lock:
            key = self._keys.pop() if self._keys else None
        self._wanted.set()
        return key if key is not None else self._generate()

    def _ensure_thread(self) -> None:
        if self._owner_pid == os.getpid():
            return
        with self._lock:
            if self._owner_pid == os.getpid():
                return
            self._owner_pid = os.getpid()
            self._keys = []  # keys inherited across a fork would be shared with the parent
            self._wanted.set()
            threading.Thread(target=self._fill, name="flask-hybrid-key-pool", daemon=True).start()

    def _fill(self) -> None:
        while True:
            self._wanted.wait()
            with self._lock:
                missing = self.size - len(self._keys)
                if missing <= 0:
                    self._wanted.clear()
                    continue
            key = self._generate()
            with self._lock:
                self._keys.append(key)
