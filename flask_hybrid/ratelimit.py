"""flask-hybrid's own rate limits, per client address: the handshake and identity-key J requests.

They are built on the ``limits`` library (the core of Flask-Limiter) directly, not on a
Flask-Limiter the extension would register on the app: that one would throttle the app's other
routes with the app's ``RATELIMIT_DEFAULT``, and with ``RATELIMIT_ENABLED = False`` it was
garbage-collected while the handshake still pointed at it. Here nothing is registered on the app,
no ``RATELIMIT_*`` key is read, and the object is framework-free: the middleware calls it before
any RSA work, the blueprint before a handshake. An app that already has a Flask-Limiter passes it
to :class:`~flask_hybrid.HybridEncryption` (``limiter=``) and the handshake limit goes there.

Clients are counted by :func:`client_key`: an IPv4 address as it is, an IPv6 address by its /64
(one customer's network, which can hold billions of addresses).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from limits import RateLimitItem, parse
from limits.errors import StorageError
from limits.storage import RedisStorage, Storage
from limits.strategies import FixedWindowRateLimiter

from .errors import RateLimited
from .stores.base import is_redis_url
from .stores.urls import CLUSTER_SCHEME, TOPOLOGY_SCHEMES, parse_topology_url

logger = logging.getLogger("flask_hybrid")

IPV6_PREFIX = 64
#: Seconds the limits are skipped after their storage failed: while a master is down, each
#: request would otherwise wait out a timeout here before the store's own 503 (or success).
OUTAGE_PAUSE = 1.0


def client_key(address: str | None) -> str:
    """The identity an address is limited under: IPv4 per address, IPv6 per /64.

    An IPv4-mapped IPv6 address (``::ffff:192.0.2.1``, what a dual-stack socket reports) counts
    as its IPv4 address. Anything that is no IP address (a Unix socket, an empty
    ``REMOTE_ADDR``) is used as it is, so such clients share one budget rather than none.

    ::

        client_key("2001:db8:1:2:aaaa::1") == "2001:db8:1:2::/64"
    """
    text = (address or "").strip()
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return text or "-"
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        network = int(parsed) >> (128 - IPV6_PREFIX) << (128 - IPV6_PREFIX)  # drops a %scope too
        return str(ipaddress.IPv6Network((network, IPV6_PREFIX)))
    return str(parsed)


def parse_limit(value: str | None, config_key: str) -> RateLimitItem | None:
    """A Flask-Limiter-style string (``"30 per minute"``) as a limit; ``None`` or ``""`` is off.

    A string that does not parse is a :class:`ValueError` naming ``config_key``.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{config_key} must be a rate limit string such as '30 per minute'")
    try:
        return parse(value)
    except ValueError:
        raise ValueError(
            f"{config_key} must be a rate limit string such as '30 per minute', not {value!r}"
        ) from None


def limit_storage_from_url(
    url: str, *, key_prefix: str = "hybrid:ratelimit", timeout: float = 0.5
) -> Storage:
    """The ``limits`` storage a URL names: ``memory://``, a Redis URL (redis-py's schemes), a
    Redis Cluster (``redis+cluster://host:port[,host:port…]``) or a Sentinel-managed master
    (``redis+sentinel://host:port[,host:port…]/service_name``), as ``limits`` names them.

    Redis counters live under ``key_prefix`` (so ``redis-cli --scan --pattern 'hybrid:*'`` finds
    every key the app owns), one key per limit and client, and each call gives up after about
    ``timeout`` seconds without a retry: a limiter that cannot count lets the request through.
    Counters on Sentinel are read and written on the master. A cluster client is built on first
    use, so the app starts while the cluster is unreachable. Any other scheme is a
    :class:`ValueError` naming the scheme only.
    """
    if url == "memory://":
        return ProcessStorage()
    scheme = url.partition("://")[0] if "://" in url else ""
    if not is_redis_url(url):
        raise ValueError(
            f"unsupported rate limit storage scheme {scheme!r}; use memory://, redis://, "
            "redis+cluster:// or redis+sentinel://"
        )
    from limits.storage import RedisClusterStorage, RedisSentinelStorage

    from .stores.redis import bounded_retry, redis_timeouts

    options: dict[str, Any] = {**redis_timeouts(timeout), "retry": bounded_retry(0)}
    if scheme not in TOPOLOGY_SCHEMES:
        return RedisStorage(url, key_prefix=key_prefix, wrap_exceptions=True, **options)
    topology = parse_topology_url(url)
    # The credentials as redis-py reads them (percent-decoded), and a URL without them for
    # limits, whose parse errors repeat the URL.
    credentials = {
        name: value
        for name, value in (("username", topology.username), ("password", topology.password))
        if value is not None
    }
    bare_url = topology.without_credentials()
    if scheme == CLUSTER_SCHEME:
        return DeferredStorage(
            lambda: RedisClusterStorage(
                bare_url,
                key_prefix=key_prefix,
                wrap_exceptions=True,
                require_full_coverage=False,
                **credentials,
                **options,
            )
        )
    return RedisSentinelStorage(
        bare_url,
        key_prefix=key_prefix,
        wrap_exceptions=True,
        use_replicas=False,
        sentinel_kwargs={**credentials, **options},
        **credentials,
        **options,
    )


class ProcessStorage(Storage):
    """Fixed-window counters in this process: what ``memory://`` names here.

    ``limits``' own ``MemoryStorage`` starts a timer thread every 10 ms while it is used, to
    expire its counters; on a busy server each such start costs a request a thread creation
    and a wait for it (about 100 µs measured on a J request). Here a counter past its window is
    dropped when next read, and expired ones are swept at most once per window length, on the
    request path, under one lock.
    """

    STORAGE_SCHEME = None

    def __init__(self) -> None:
        super().__init__(wrap_exceptions=True)
        self._counters: dict[str, tuple[int, float]] = {}  # key -> (count, expires at)
        self._lock = threading.Lock()
        self._next_sweep = 0.0

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        return ValueError  # nothing here fails but a bug

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = time.time()
        with self._lock:
            if now >= self._next_sweep:
                self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
                self._next_sweep = now + expiry
            count, expires_at = self._counters.get(key, (0, 0.0))
            if expires_at <= now:
                count, expires_at = 0, now + expiry
            count += amount
            self._counters[key] = (count, expires_at)
            return count

    def _live(self, key: str) -> tuple[int, float]:
        entry = self._counters.get(key)
        if entry is None or entry[1] <= time.time():
            return 0, time.time()
        return entry

    def get(self, key: str) -> int:
        with self._lock:
            return self._live(key)[0]

    def get_expiry(self, key: str) -> float:
        with self._lock:
            return self._live(key)[1]

    def check(self) -> bool:
        return True

    def reset(self) -> int | None:
        with self._lock:
            count = len(self._counters)
            self._counters.clear()
            return count

    def clear(self, key: str) -> None:
        with self._lock:
            self._counters.pop(key, None)


class DeferredStorage(Storage):
    """A ``limits`` storage built on first use, and again after a failed build.

    ``limits`` connects a Redis Cluster storage when it is built; deferring that keeps an app
    starting while its cluster is unreachable, and its limits counting once it answers. Errors
    of the build or of a call (``RedisClusterException`` is no ``RedisError``) are raised as
    ``limits``' ``StorageError``.
    """

    STORAGE_SCHEME = None

    def __init__(self, build: Callable[[], Storage]) -> None:
        super().__init__(wrap_exceptions=True)
        self._build = build
        self._storage: Storage | None = None
        self._lock = threading.Lock()

    @property
    def base_exceptions(self) -> type[Exception] | tuple[type[Exception], ...]:
        from redis.exceptions import RedisClusterException, RedisError

        return (RedisError, RedisClusterException, OSError)

    @property
    def storage(self) -> Storage:
        """The built storage; built now if it is not yet."""
        if self._storage is None:
            with self._lock:
                if self._storage is None:
                    self._storage = self._build()
        return self._storage

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        return self.storage.incr(key, expiry, amount)

    def get(self, key: str) -> int:
        return self.storage.get(key)

    def get_expiry(self, key: str) -> float:
        return self.storage.get_expiry(key)

    def check(self) -> bool:
        return self.storage.check()

    def reset(self) -> int | None:
        return self.storage.reset()

    def clear(self, key: str) -> None:
        self.storage.clear(key)


class RateLimits:
    """The handshake limit and the identity-key J limit, counted per :func:`client_key`.

    Each ``hit_*`` method counts one request and raises :class:`~flask_hybrid.errors.RateLimited`
    (with ``retry_after``, whole seconds until the window resets) when the address is over its
    limit. A limit of ``None`` is off. If the storage cannot be reached the request is let
    through and a warning is logged: a limiter outage must not take the API down. After such a
    failure the limits are skipped for :data:`OUTAGE_PAUSE` seconds, so a down master costs each
    request at most one wait here, not one per request, and the storage is not hammered.

    Windows are fixed and start at an address's first request (the ``limits`` library's
    fixed-window strategy, Flask-Limiter's default), so ``"600 per minute"`` lets 600 requests
    through in the 60 s after the first and refuses the 601st until the window ends.

    ::

        limits = RateLimits(handshake="30 per minute", jwe="600 per minute")
        limits.hit_jwe(environ.get("REMOTE_ADDR"))  # RateLimited if over
    """

    def __init__(
        self,
        *,
        handshake: str | None = "30 per minute",
        jwe: str | None = "600 per minute",
        storage: Storage | None = None,
    ) -> None:
        self.handshake_limit = handshake or None
        self.jwe_limit = jwe or None
        self._handshake = parse_limit(handshake, "HYBRID_HANDSHAKE_LIMIT")
        self._jwe = parse_limit(jwe, "HYBRID_JWE_LIMIT")
        self.storage = storage if storage is not None else ProcessStorage()
        self._limiter = FixedWindowRateLimiter(self.storage)
        self._paused_until = 0.0  # time.monotonic(); see OUTAGE_PAUSE

    def hit_handshake(self, address: str | None) -> None:
        """Count a handshake (``POST {prefix}/session``) from ``address``."""
        self._hit(self._handshake, "handshake", address)

    def hit_jwe(self, address: str | None) -> None:
        """Count a J request encrypted to an identity key, before its RSA unwrap."""
        self._hit(self._jwe, "jwe", address)

    def _hit(self, limit: RateLimitItem | None, scope: str, address: str | None) -> None:
        if limit is None:
            return
        if time.monotonic() < self._paused_until:
            return
        key = client_key(address)
        try:
            if self._limiter.hit(limit, scope, key):
                return
            reset_at = self._limiter.get_window_stats(limit, scope, key).reset_time
        except (StorageError, OSError):
            self._paused_until = time.monotonic() + OUTAGE_PAUSE
            logger.warning("flask-hybrid: the rate limit storage is unavailable; not limiting")
            return
        retry_after = max(1, math.ceil(reset_at - time.time()))  # the storages' clock
        raise RateLimited(f"{scope}_limit", retry_after=retry_after)
