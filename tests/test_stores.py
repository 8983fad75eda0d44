from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from uuid import uuid4

import pytest
import redis

from flask_hybrid.errors import StoreUnavailable
from flask_hybrid.stores import (
    MemoryStore,
    RedisStore,
    SessionStore,
    StoreError,
    store_from_url,
)
from flask_hybrid.stores.memory import SWEEP_INTERVAL
from flask_hybrid.stores.urls import TopologyURL, parse_topology_url
from tests.redis_server import RedisServerProcess, escape_glob, free_port
from tests.redis_topologies import (
    ClusterTopology,
    SentinelTopology,
    delete_under,
    topology_prefix,
)

BOUND_SECONDS = 2.0


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    """A store plus a view of its raw storage, so one suite can check both backends."""

    store: SessionStore
    raw_keys: Callable[[], list[str]]
    raw_ttl_ms: Callable[[str], int | None]
    wait: Callable[[float], None]


def memory_backend() -> Backend:
    clock = FakeClock()
    store = MemoryStore(key_prefix="test:", clock=clock)

    def raw_ttl_ms(full_key: str) -> int | None:
        entry = store._entries.get(full_key)
        return None if entry is None else round((entry[1] - clock()) * 1000)

    return Backend(store, lambda: sorted(store._entries), raw_ttl_ms, clock.advance)


def redis_backend(url: str, prefix: str, client: redis.Redis | redis.RedisCluster) -> Backend:
    """A store on ``url``; ``client`` sees the same keys (on a cluster: on every master)."""
    store = RedisStore(url, key_prefix=prefix)

    def raw_keys() -> list[str]:
        return sorted(key.decode() for key in client.scan_iter(match=escape_glob(prefix) + "*"))

    def raw_ttl_ms(full_key: str) -> int | None:
        remaining = client.pttl(full_key)
        return None if remaining == -2 else remaining

    return Backend(store, raw_keys, raw_ttl_ms, time.sleep)


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("redis", id="redis"),
        pytest.param("cluster", id="cluster"),
        pytest.param("sentinel", id="sentinel"),
    ]
)
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    raw_client: redis.Redis | redis.RedisCluster | None = None
    if request.param == "memory":
        built = memory_backend()
    elif request.param == "redis":
        built = redis_backend(
            request.getfixturevalue("redis_url"),
            request.getfixturevalue("redis_prefix"),
            request.getfixturevalue("redis_client"),
        )
    elif request.param == "cluster":
        cluster: ClusterTopology = request.getfixturevalue("redis_cluster")
        raw_client = cluster.client()
        built = redis_backend(cluster.url, topology_prefix(), raw_client)
    else:
        sentinel: SentinelTopology = request.getfixturevalue("redis_sentinel")
        raw_client = redis.Redis(host="127.0.0.1", port=sentinel.master_port())
        built = redis_backend(sentinel.url, topology_prefix(), raw_client)
    yield built
    built.store.close()
    if raw_client is not None:
        delete_under(raw_client, built.store.key_prefix)
        raw_client.close()


def test_satisfies_protocol(backend: Backend) -> None:
    assert isinstance(backend.store, SessionStore)


def test_set_then_get(backend: Backend) -> None:
    backend.store.set("sid", b"state", 60)
    assert backend.store.get("sid") == b"state"


def test_set_overwrites(backend: Backend) -> None:
    backend.store.set("sid", b"old", 60)
    backend.store.set("sid", b"new", 60)
    assert backend.store.get("sid") == b"new"


def test_missing_key_is_none(backend: Backend) -> None:
    assert backend.store.get("never-set") is None


def test_delete(backend: Backend) -> None:
    backend.store.set("sid", b"state", 60)
    assert backend.store.delete("sid") is True
    assert backend.store.get("sid") is None
    assert backend.store.delete("sid") is False


def test_add_only_when_absent(backend: Backend) -> None:
    assert backend.store.add("jti", b"first", 60) is True
    assert backend.store.add("jti", b"second", 60) is False
    assert backend.store.get("jti") == b"first"
    backend.store.delete("jti")
    assert backend.store.add("jti", b"third", 60) is True


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"", id="empty"),
        pytest.param(bytes(range(256)), id="all-bytes"),
        pytest.param(b"\x00\r\n$-1\r\n", id="resp-like"),
        pytest.param(bytes(range(256)) * 256, id="64k"),
    ],
)
def test_binary_values_round_trip(backend: Backend, value: bytes) -> None:
    backend.store.set("blob", value, 60)
    assert backend.store.get("blob") == value


def test_key_prefix_applied(backend: Backend) -> None:
    backend.store.set("sid", b"state", 60)
    backend.store.add("jti", b"seen", 60)
    prefix = backend.store.key_prefix
    assert backend.raw_keys() == [prefix + "jti", prefix + "sid"]


def test_ttl_expiry(backend: Backend) -> None:
    full_key = backend.store.key_prefix + "sid"
    backend.store.set("sid", b"state", 1)
    assert 0 < (backend.raw_ttl_ms(full_key) or 0) <= 1000
    assert backend.store.get("sid") == b"state"

    backend.wait(1.1)

    assert backend.store.get("sid") is None
    assert backend.raw_ttl_ms(full_key) is None
    assert backend.raw_keys() == []
    assert backend.store.add("sid", b"again", 1) is True
    assert 0 < (backend.raw_ttl_ms(full_key) or 0) <= 1000


@pytest.mark.parametrize(
    ("value", "ttl", "error"),
    [
        pytest.param("text", 60, TypeError, id="str-value"),
        pytest.param(bytearray(b"x"), 60, TypeError, id="bytearray-value"),
        pytest.param(b"x", 0, ValueError, id="zero-ttl"),
        pytest.param(b"x", -5, ValueError, id="negative-ttl"),
        pytest.param(b"x", 1.5, TypeError, id="float-ttl"),
        pytest.param(b"x", True, TypeError, id="bool-ttl"),
    ],
)
def test_invalid_entry_refused(backend: Backend, value: object, ttl: object, error: type) -> None:
    with pytest.raises(error):
        backend.store.set("sid", value, ttl)  # type: ignore[arg-type]
    with pytest.raises(error):
        backend.store.add("sid", value, ttl)  # type: ignore[arg-type]
    assert backend.raw_keys() == []


def test_concurrent_add_has_one_winner(backend: Backend) -> None:
    threads_count = 32
    barrier = threading.Barrier(threads_count)
    results: list[bool] = []
    results_lock = threading.Lock()

    def contend(index: int) -> None:
        barrier.wait()
        added = backend.store.add("jti", str(index).encode(), 60)
        with results_lock:
            results.append(added)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == threads_count
    assert results.count(True) == 1


def test_ping(backend: Backend) -> None:
    backend.store.ping()


def test_memory_expires_exactly_at_deadline() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    store.set("sid", b"state", 10)
    clock.advance(9.999)
    assert store.get("sid") == b"state"
    clock.advance(0.001)
    assert store.get("sid") is None
    assert store.delete("sid") is False


def test_memory_sweep_purges_entries_never_read() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    for index in range(100):
        store.set(f"sid-{index}", b"state", 1)
    store.set("long-lived", b"state", 3600)
    clock.advance(SWEEP_INTERVAL)
    store.set("trigger", b"state", 60)
    assert sorted(store._entries) == ["hybrid:long-lived", "hybrid:trigger"]


def test_memory_close_forgets_everything() -> None:
    store = MemoryStore()
    store.set("sid", b"state", 60)
    store.close()
    assert store.get("sid") is None


def test_importing_stores_does_not_import_redis() -> None:
    code = "import sys, flask_hybrid.stores; print('redis' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "False"


def test_store_error_is_store_unavailable() -> None:
    assert StoreError is StoreUnavailable


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param("memory://", MemoryStore, id="memory"),
        pytest.param("redis://127.0.0.1:6379/0", RedisStore, id="redis"),
        pytest.param("rediss://127.0.0.1:6380/0", RedisStore, id="rediss"),
        pytest.param("unix:///run/redis/redis.sock?db=0", RedisStore, id="unix"),
    ],
)
def test_store_from_url_picks_backend(url: str, expected: type) -> None:
    store = store_from_url(url, key_prefix="app:", timeout=0.25)
    try:
        assert type(store) is expected
        assert store.key_prefix == "app:"
        if isinstance(store, RedisStore):
            connection_kwargs = store.client.connection_pool.connection_kwargs
            assert connection_kwargs["socket_timeout"] == 0.25
            assert connection_kwargs["socket_connect_timeout"] == 0.25
    finally:
        store.close()


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("memcached://user:hunter2@localhost", id="memcached"),
        pytest.param("hunter2", id="no-scheme"),
        pytest.param("user:hunter2@host://", id="malformed-scheme"),
        pytest.param("", id="empty"),
    ],
)
def test_store_from_url_unknown_scheme(url: str) -> None:
    with pytest.raises(ValueError, match="unsupported session store scheme") as exc_info:
        store_from_url(url)
    assert "hunter2" not in str(exc_info.value)


def test_store_from_url_names_the_scheme() -> None:
    with pytest.raises(ValueError, match="'memcached'"):
        store_from_url("memcached://localhost")


def test_redis_store_accepts_a_client(redis_url: str, redis_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisStore(client, key_prefix=redis_prefix)
    store.set("sid", b"state", 60)
    assert client.get(redis_prefix + "sid") == b"state"
    store.close()
    assert client.ping() is True  # the caller's client is the caller's to close
    client.close()


def test_redis_store_refuses_decoding_client(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    with pytest.raises(ValueError, match="decode"):
        RedisStore(client)
    client.close()


def test_redis_store_refuses_other_types() -> None:
    with pytest.raises(TypeError):
        RedisStore(6379)  # type: ignore[arg-type]


SECRET_KEY = "sid-7f3a9c-secret"
SECRET_VALUE = b"value-41d2e8-secret"

STORE_CALLS: list[object] = [
    pytest.param(lambda store: store.set(SECRET_KEY, SECRET_VALUE, 60), id="set"),
    pytest.param(lambda store: store.get(SECRET_KEY), id="get"),
    pytest.param(lambda store: store.delete(SECRET_KEY), id="delete"),
    pytest.param(lambda store: store.add(SECRET_KEY, SECRET_VALUE, 60), id="add"),
    pytest.param(lambda store: store.ping(), id="ping"),
]


def assert_bare_store_error(error: BaseException) -> None:
    assert type(error) is StoreError
    assert error.__cause__ is None
    assert error.__suppress_context__ is True
    for text in (str(error), repr(error), *map(str, error.args)):
        assert SECRET_KEY not in text
        assert SECRET_VALUE.decode() not in text


@pytest.mark.parametrize("call", STORE_CALLS)
def test_closed_port_raises_store_error_quickly(call: Callable[[RedisStore], object]) -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    with pytest.raises(StoreError) as exc_info:
        call(store)
    assert time.monotonic() - started < BOUND_SECONDS
    assert_bare_store_error(exc_info.value)
    store.close()


def test_silent_server_raises_store_error_within_bound() -> None:
    # Accepts connections (the kernel completes the handshake) but never answers a byte:
    # the case socket timeouts exist for. One attempt plus one retry at 0.2 s each.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        port = listener.getsockname()[1]
        store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout=0.2)
        started = time.monotonic()
        with pytest.raises(StoreError) as exc_info:
            store.get(SECRET_KEY)
        assert time.monotonic() - started < BOUND_SECONDS
        assert_bare_store_error(exc_info.value)
        store.close()


def test_redis_store_recovers_by_itself(own_redis_server: RedisServerProcess) -> None:
    store = RedisStore(own_redis_server.url, key_prefix="recovery:")
    store.set("sid", b"before", 60)
    assert store.get("sid") == b"before"

    own_redis_server.stop()
    calls: list[Callable[[], object]] = [
        lambda: store.get("sid"),
        store.ping,
        lambda: store.set("sid", b"x", 60),
    ]
    for call in calls:
        started = time.monotonic()
        with pytest.raises(StoreError):
            call()
        assert time.monotonic() - started < BOUND_SECONDS

    own_redis_server.start()
    store.ping()
    assert store.get("sid") is None  # the server keeps nothing across a restart
    store.set("sid", b"after", 60)
    assert store.get("sid") == b"after"
    assert store.add("jti", b"seen", 60) is True
    store.close()


def test_redis_store_uses_one_pool(own_redis_server: RedisServerProcess) -> None:
    store = RedisStore(own_redis_server.url)
    pool = store.client.connection_pool
    for index in range(20):
        store.set(f"sid-{index}", b"state", 60)
        store.get(f"sid-{index}")
    assert store.client.connection_pool is pool
    clients = redis.Redis.from_url(own_redis_server.url)
    # One connection served every sequential call, plus the one asking.
    assert len(clients.client_list()) == 2
    clients.close()
    store.close()


# --- Redis Cluster and Sentinel URLs ----------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        pytest.param(
            "redis+cluster://10.0.0.1:7000,10.0.0.2:7001",
            TopologyURL("redis+cluster", (("10.0.0.1", 7000), ("10.0.0.2", 7001))),
            id="cluster",
        ),
        pytest.param(
            "redis+cluster://redis-a,[::1]:7002",
            TopologyURL("redis+cluster", (("redis-a", 6379), ("::1", 7002))),
            id="cluster-default-port-ipv6",
        ),
        pytest.param(
            "redis+cluster://:p%40ss%3Aword@h:1",
            TopologyURL("redis+cluster", (("h", 1),), None, "p@ss:word"),
            id="cluster-password-percent-encoded",
        ),
        pytest.param(
            "redis+sentinel://app:pw@s1:26379,s2/mymaster",
            TopologyURL("redis+sentinel", (("s1", 26379), ("s2", 26379)), "app", "pw", "mymaster"),
            id="sentinel",
        ),
    ],
)
def test_topology_urls_parse(url: str, expected: TopologyURL) -> None:
    parsed = parse_topology_url(url)
    assert parsed == expected
    assert parsed.password == expected.password  # not part of the repr, still compared
    assert "pw" not in repr(parsed) and "word" not in repr(parsed)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("redis+sentinel://:hunter2@s1:26379", id="sentinel-without-service"),
        pytest.param("redis+sentinel://:hunter2@s1:26379/a/b", id="sentinel-two-segments"),
        pytest.param("redis+cluster://:hunter2@h:1/3", id="cluster-db"),
        pytest.param("redis+cluster://:hunter2@h:1?ssl=true", id="cluster-query"),
        pytest.param("redis+cluster://:hunter2@h:99999", id="port-range"),
        pytest.param("redis+cluster://:hunter2@h:1,,h:2", id="empty-host"),
        pytest.param("redis+cluster://:hunter2@[::1", id="open-bracket"),
    ],
)
def test_topology_urls_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ValueError) as exc_info:
        store_from_url(url)
    assert "hunter2" not in str(exc_info.value)


@pytest.mark.parametrize(
    "url",
    [
        pytest.param("redis+cluster://127.0.0.1:{port}", id="cluster"),
        pytest.param("redis+sentinel://127.0.0.1:{port}/mymaster", id="sentinel"),
    ],
)
def test_topology_store_builds_without_a_server_and_fails_quickly(url: str) -> None:
    """An app starts while its cluster or Sentinels are unreachable; calls are 503s meanwhile."""
    store = store_from_url(url.format(port=free_port()), key_prefix="app:", timeout=0.25)
    assert isinstance(store, RedisStore)
    for call in STORE_CALLS:
        started = time.monotonic()
        with pytest.raises(StoreError) as exc_info:
            call.values[0](store)  # type: ignore[attr-defined]
        assert time.monotonic() - started < BOUND_SECONDS
        assert_bare_store_error(exc_info.value)
    store.close()


def test_cluster_key_prefix_with_a_hash_tag_is_refused() -> None:
    with pytest.raises(ValueError, match="hash tag"):
        store_from_url("redis+cluster://127.0.0.1:7000", key_prefix="{app}:")
    store_from_url("redis+cluster://127.0.0.1:7000", key_prefix="app{}:").close()  # empty tag
    store_from_url("redis://127.0.0.1:7000", key_prefix="{app}:").close()  # one server


def test_cluster_keys_spread_over_the_masters(redis_cluster: ClusterTopology) -> None:
    """No hash tag pins the store's keys to one slot: sessions and jti records land on every
    master, and each operation is one key (so no CROSSSLOT error can happen)."""
    store = RedisStore(redis_cluster.url, key_prefix=topology_prefix())
    client = redis_cluster.client()
    for index in range(60):
        store.set(f"{uuid4()}", b"session", 60)
        assert store.add(f"jti:{index}", b"1", 60) is True
    holders = {
        client.get_node_from_key(key).port
        for key in client.scan_iter(match=escape_glob(store.key_prefix) + "*")
    }
    assert holders == {node.port for node in redis_cluster.nodes}
    delete_under(client, store.key_prefix)
    client.close()
    store.close()


@pytest.mark.parametrize("kind", ["cluster", "sentinel"])
def test_topology_store_accepts_a_client(request: pytest.FixtureRequest, kind: str) -> None:
    """A caller-built client (the way to TLS or other options) is used as it is, not closed."""
    from redis.sentinel import Sentinel

    prefix = topology_prefix()
    sentinel: Sentinel | None = None
    client: redis.Redis | redis.RedisCluster
    if kind == "cluster":
        client = request.getfixturevalue("redis_cluster").client()
    else:
        topology: SentinelTopology = request.getfixturevalue("redis_sentinel")
        sentinel = Sentinel([("127.0.0.1", s.port) for s in topology.sentinels])
        client = sentinel.master_for("hybrid-master", socket_timeout=1)
    store = RedisStore(client, key_prefix=prefix)
    store.set("sid", b"state", 60)
    assert client.get(prefix + "sid") == b"state"
    store.close()
    assert client.ping() is True
    client.delete(prefix + "sid")
    client.close()
    if sentinel is not None:
        sentinel.close()
