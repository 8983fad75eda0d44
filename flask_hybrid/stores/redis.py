"""A Redis store on redis-py: one server, a Redis Cluster or a Sentinel-managed master.

``redis`` is imported when a store is built, not when this module is, so ``flask_hybrid``
imports without it.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from .base import StoreError, check_entry
from .urls import CLUSTER_SCHEME, SENTINEL_SCHEME, TopologyURL, parse_topology_url

if TYPE_CHECKING:
    import redis as redis_py
    from redis.cluster import RedisCluster
    from redis.retry import Retry

    RedisClient = redis_py.Redis | RedisCluster

#: Retries after a failed call: one, after a short random pause, so a fleet of workers that lost
#: the same master does not reconnect in lockstep and a dead master costs each call at most two
#: timeouts. A RedisCluster uses the count only; between its attempts it re-reads the slot map.
RETRIES = 1
BACKOFF_BASE = 0.05
BACKOFF_CAP = 0.1


def bounded_retry(retries: int = RETRIES) -> Retry:
    """redis-py's ``Retry``: ``retries`` attempts more after a jittered pause of at most 0.1 s."""
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.retry import Retry

    return Retry(ExponentialWithJitterBackoff(cap=BACKOFF_CAP, base=BACKOFF_BASE), retries)


def redis_timeouts(timeout: float) -> dict[str, Any]:
    """Connection keyword arguments that bound every socket wait to ``timeout`` seconds."""
    return {"socket_timeout": timeout, "socket_connect_timeout": timeout}


class RedisStore:
    """Keys under ``key_prefix`` in Redis, with ``SET … EX`` for TTLs and ``SET … NX`` for
    :meth:`add`. Every operation touches one key, so on a Redis Cluster nothing crosses a hash
    slot and the keys spread over the masters (the prefix must hold no ``{hash tag}``).

    Given a URL, the store builds its own client whose calls give up after about ``timeout``
    seconds, with one retry (see :data:`RETRIES`), instead of redis-py's default of several
    retries with long backoff: a down or frozen master should cost a request a 503 quickly,
    not hold a worker. The URL may name

    - one server: ``redis://``, ``rediss://``, ``unix://`` (redis-py's ``from_url``);
    - a Redis Cluster: ``redis+cluster://[:password@]host:port[,host:port…]``, through
      redis-py's ``RedisCluster``, built on first use so that an app starts while the cluster
      is unreachable;
    - a master watched by Sentinels: ``redis+sentinel://[:password@]host:port[,…]/service``,
      through redis-py's ``Sentinel.master_for``: every read and write goes to the master the
      Sentinels name now. The password is also sent to the Sentinels, as ``limits`` does.

    The clients reconnect on the next command, to the new master after a failover, so the store
    recovers by itself. Given a client instead (``redis.Redis``, a Sentinel's ``master_for``
    client or a ``RedisCluster``: the way to use TLS or other options with a cluster or
    Sentinel), the store uses it as it is (its timeouts and retries are the caller's) and
    leaves closing it to the caller.

    Every driver error, and ``OSError``, is raised as a bare :data:`StoreError`.

    ::

        store = RedisStore("redis+cluster://10.0.0.1:6379,10.0.0.2:6379", key_prefix="myapp:")
    """

    def __init__(
        self,
        client_or_url: str | RedisClient,
        *,
        key_prefix: str = "hybrid:",
        timeout: float = 0.5,
    ) -> None:
        import redis as redis_py
        from redis.cluster import RedisCluster
        from redis.exceptions import RedisClusterException

        self.key_prefix = key_prefix
        self._driver_errors: tuple[type[Exception], ...] = (
            redis_py.RedisError,
            RedisClusterException,  # not a RedisError: "cannot connect to the cluster"
            OSError,
        )
        self._client: RedisClient | None = None
        self._topology: TopologyURL | None = None
        self._sentinel: Any = None
        self._timeout = timeout
        self._build_lock = threading.Lock()
        if isinstance(client_or_url, str):
            self._owns_client = True
            if client_or_url.startswith(f"{CLUSTER_SCHEME}://"):
                self._topology = parse_topology_url(client_or_url)
            elif client_or_url.startswith(f"{SENTINEL_SCHEME}://"):
                self._client = self._sentinel_master(parse_topology_url(client_or_url))
            else:
                self._client = redis_py.Redis.from_url(
                    client_or_url, retry=bounded_retry(), **redis_timeouts(timeout)
                )
        elif isinstance(client_or_url, (redis_py.Redis, RedisCluster)):
            self._client = client_or_url
            self._owns_client = False
        else:
            raise TypeError("expected a Redis URL, a redis.Redis or a RedisCluster client")
        if self._client is not None and self._client.get_encoder().decode_responses:
            raise ValueError("the Redis client must not decode responses; values are bytes")
        clustered = self._topology is not None or isinstance(self._client, RedisCluster)
        if clustered and _has_hash_tag(key_prefix):
            raise ValueError(
                "on a Redis Cluster the key prefix must hold no {hash tag}: it would put every "
                "key in one slot, on one master"
            )

    @property
    def client(self) -> RedisClient:
        """The redis-py client; for a cluster URL, built (and connected) on first use."""
        if self._client is None:
            with self._build_lock:
                if self._client is None:
                    try:
                        self._client = self._cluster_client()
                    except self._driver_errors:
                        raise StoreError from None
        return self._client

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
            return bool(self.client.delete(self.key_prefix + key) == 1)
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
        """Disconnect the pools, if this store built them."""
        if not self._owns_client:
            return
        if self._client is not None:
            self._client.close()
        if self._sentinel is not None:
            self._sentinel.close()

    def _cluster_client(self) -> RedisCluster:
        from redis.cluster import ClusterNode, RedisCluster

        assert self._topology is not None
        return RedisCluster(
            startup_nodes=[ClusterNode(host, port) for host, port in self._topology.nodes],
            username=self._topology.username,
            password=self._topology.password,
            retry=bounded_retry(),
            # Serve the slots whose master answers even while another master's are uncovered.
            require_full_coverage=False,
            **redis_timeouts(self._timeout),
        )

    def _sentinel_master(self, topology: TopologyURL) -> redis_py.Redis:
        from redis.sentinel import Sentinel

        credentials = {"username": topology.username, "password": topology.password}
        self._sentinel = Sentinel(
            list(topology.nodes),
            # No retry per Sentinel: the next one in the list is the retry.
            sentinel_kwargs={
                **credentials,
                **redis_timeouts(self._timeout),
                "retry": bounded_retry(0),
            },
            retry=bounded_retry(),
            **credentials,
            **redis_timeouts(self._timeout),
        )
        assert topology.service_name is not None
        master: redis_py.Redis = self._sentinel.master_for(topology.service_name)
        return master


def _has_hash_tag(key_prefix: str) -> bool:
    """Whether Redis Cluster would hash only a ``{…}`` part of keys that start so."""
    opening = key_prefix.find("{")
    return opening != -1 and key_prefix.find("}", opening + 1) > opening + 1
