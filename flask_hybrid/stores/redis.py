"""A Redis store on redis-py: shared by every worker, with TTLs kept by Redis itself.

``redis`` is imported when a store is built, not when this module is, so ``flask_hybrid``
imports without it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import StoreError, check_entry

if TYPE_CHECKING:
    import redis as redis_py


class RedisStore:
    """Keys under ``key_prefix`` in Redis, with ``SET … EX`` for TTLs and ``SET … NX`` for
    :meth:`add`.

    Given a URL, the store builds one client (one connection pool) whose calls give up after
    about ``timeout`` seconds plus one immediate retry, instead of redis-py's default of ten
    retries with backoff: a down Redis should cost a request a 503 quickly, not hold a worker.
    The pool reconnects on the next command, so the store recovers by itself when Redis comes
    back. Given a ``redis.Redis`` client, the store uses it as it is (its timeouts and retries
    are the caller's) and leaves closing it to the caller.

    Every driver error, and ``OSError``, is raised as a bare :data:`StoreError`.

    ::

        store = RedisStore("redis://localhost:6379/0", key_prefix="myapp:")
    """

    def __init__(
        self,
        client_or_url: str | redis_py.Redis,
        *,
        key_prefix: str = "hybrid:",
        timeout: float = 0.5,
    ) -> None:
        import redis as redis_py
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if isinstance(client_or_url, str):
            self.client: redis_py.Redis = redis_py.Redis.from_url(
                client_or_url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                retry=Retry(NoBackoff(), 1),
            )
            self._owns_client = True
        elif isinstance(client_or_url, redis_py.Redis):
            self.client = client_or_url
            self._owns_client = False
        else:
            raise TypeError("expected a Redis URL or a redis.Redis client")
        if self.client.connection_pool.connection_kwargs.get("decode_responses"):
            raise ValueError("the Redis client must not decode responses; values are bytes")
        self.key_prefix = key_prefix
        self._driver_errors: tuple[type[Exception], ...] = (redis_py.RedisError, OSError)

    def set(self, key: str, value: bytes, ttl: int) -> None:
        check_entry(value, ttl)
        try:
            self.client.set(self.key_prefix + key, value, ex=ttl)
        except self._driver_errors:
            raise StoreError from None

    def get(self, key: str) -> bytes | None:
        try:
            value = self.client.get(self.key_prefix + key)
        except self._driver_errors:
            raise StoreError from None
        return value  # type: ignore[return-value]

    def delete(self, key: str) -> bool:
        try:
            return self.client.delete(self.key_prefix + key) == 1
        except self._driver_errors:
            raise StoreError from None

    def add(self, key: str, value: bytes, ttl: int) -> bool:
        check_entry(value, ttl)
        try:
            return bool(self.client.set(self.key_prefix + key, value, ex=ttl, nx=True))
        except self._driver_errors:
            raise StoreError from None

    def ping(self) -> None:
        try:
            self.client.ping()
        except self._driver_errors:
            raise StoreError from None

    def close(self) -> None:
        """Disconnect the pool, if this store built it."""
        if self._owns_client:
            self.client.close()
