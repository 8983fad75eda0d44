"""The session store protocol, its one error, and the factory that picks a backend by URL.

A store keeps opaque bytes under string keys for a whole number of seconds. The session layer
depends only on :class:`SessionStore`; which backend runs is configuration
(``memory://``, ``redis://…``, ``redis+cluster://…``, ``redis+sentinel://…``), in the manner of
Flask-Limiter's storage URLs.
"""

from __future__ import annotations

import re
from typing import Protocol, runtime_checkable

from ..errors import StoreUnavailable

#: Every driver failure (connection, timeout, protocol) surfaces as this one exception, raised
#: bare so that no key or value can reach a log or a response through its message.
StoreError = StoreUnavailable

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix", "redis+cluster", "redis+sentinel"})
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


@runtime_checkable
class SessionStore(Protocol):
    """Bytes under string keys with a TTL in whole seconds.

    Keys are given *without* the prefix; the store adds its ``key_prefix``, so several apps
    (or test runs) can share one Redis. Every method but :meth:`close` may raise
    :data:`StoreError` when the backend cannot be reached.
    """

    key_prefix: str

    def set(self, key: str, value: bytes, ttl: int) -> None:
        """Store ``value``, replacing any previous one; it expires after ``ttl`` seconds."""

    def get(self, key: str) -> bytes | None:
        """The stored value, or ``None`` when it is absent or expired."""

    def delete(self, key: str) -> bool:
        """Remove the key; ``True`` if something was deleted."""

    def add(self, key: str, value: bytes, ttl: int) -> bool:
        """Atomically store ``value`` only if the key is absent; ``True`` if it was added.

        This is what makes replay records (``jti``) hold across processes.
        """

    def ping(self) -> None:
        """Return if the backend answers; raise :data:`StoreError` if not."""

    def close(self) -> None:
        """Release the connections or memory the store holds."""


def check_entry(value: bytes, ttl: int) -> None:
    """Refuse what a backend would store differently, so both backends behave alike."""
    if not isinstance(value, bytes):
        raise TypeError("the value must be bytes")
    if isinstance(ttl, bool) or not isinstance(ttl, int):
        raise TypeError("the TTL must be an int of seconds")
    if ttl < 1:
        raise ValueError("the TTL must be at least 1 second")


def is_redis_url(url: str) -> bool:
    """Whether ``url`` names a Redis server (the schemes :func:`store_from_url` sends there)."""
    match = _SCHEME.match(url)
    return match is not None and match.group(1) in REDIS_SCHEMES


def store_from_url(url: str, *, key_prefix: str = "hybrid:", timeout: float = 0.5) -> SessionStore:
    """Build the store a URL names.

    ``memory://`` gives a :class:`~flask_hybrid.stores.MemoryStore` (one process only);
    ``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://host:port[,host:port…]`` and
    ``redis+sentinel://host:port[,host:port…]/service_name`` give a
    :class:`~flask_hybrid.stores.RedisStore` whose calls give up after about ``timeout``
    seconds. Any other scheme is a :class:`ValueError` that names the scheme but not the URL,
    which may hold a password.

    ::

        store = store_from_url("redis://localhost:6379/0", key_prefix="myapp:")
        store = store_from_url("redis+sentinel://10.0.0.5:26379,10.0.0.6:26379/mymaster")
    """
    # Case-sensitive, as redis-py's parser is; only a well-formed scheme goes into the message.
    match = _SCHEME.match(url)
    scheme = match.group(1) if match else ""
    if scheme == "memory":
        from .memory import MemoryStore

        return MemoryStore(key_prefix=key_prefix)
    if is_redis_url(url):
        from .redis import RedisStore

        return RedisStore(url, key_prefix=key_prefix, timeout=timeout)
    raise ValueError(
        f"unsupported session store scheme {scheme!r}; use memory://, redis://, rediss://, "
        "unix://, redis+cluster:// or redis+sentinel://"
    )
