"""Real Redis topologies for the tests: a 3-master Redis Cluster and a master + replica watched
by 3 Sentinels, on free ports of 127.0.0.1, built from Debian's ``redis-server`` and
``redis-sentinel`` and stopped by PID. Nothing is mocked and nothing skips: a topology that does
not come up fails the tests that need it, with the servers' logs.

The fixtures are served by the ``tests.redis_server`` plugin: ``redis_cluster`` and
``redis_sentinel`` are shared by the session (tests must leave them as they found them);
``own_redis_cluster`` and ``own_redis_sentinel`` are private to one test, which may freeze,
stop or fail over their servers.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from uuid import uuid4

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from tests.redis_server import RedisServerProcess, escape_glob, find_redis_server, free_port

SERVICE_NAME = "hybrid-master"
TOPOLOGY_TIMEOUT = 20.0
CLUSTER_SLOTS = 16384
#: How long a master may be silent before the Sentinels call it down (and, for the cluster,
#: before the other masters mark it failing).
DOWN_AFTER_MS = 1000


def find_redis_sentinel() -> str:
    """Debian's ``redis-sentinel``, else ``redis-server`` (a Sentinel with ``--sentinel``)."""
    return shutil.which("redis-sentinel") or (
        "/usr/bin/redis-sentinel"
        if os.access("/usr/bin/redis-sentinel", os.X_OK)
        else find_redis_server()
    )


def wait_until(condition: Callable[[], bool], what: str, timeout: float = TOPOLOGY_TIMEOUT) -> None:
    """Poll ``condition`` (errors count as False) until true; fail naming ``what`` if it is not."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


def cluster_info(client: redis.Redis) -> dict[str, str]:
    """``CLUSTER INFO`` of one node as text fields."""
    text = client.execute_command("CLUSTER", "INFO").decode()
    return dict(line.split(":", 1) for line in text.split() if ":" in line)


def _client(server: RedisServerProcess) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=2)


class SentinelProcess(RedisServerProcess):
    """A ``redis-sentinel`` watching ``master_port`` (quorum 2), from a config file it may
    rewrite, as Sentinel does when it learns the topology."""

    def __init__(self, master_port: int) -> None:
        super().__init__(find_redis_sentinel())
        self.config_path = self.workdir / "sentinel.conf"
        self.config_path.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            "daemonize no\n"
            f"dir {self.workdir}\n"
            f"logfile {self.log_path}\n"
            f"sentinel monitor {SERVICE_NAME} 127.0.0.1 {master_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE_NAME} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE_NAME} 5000\n"
            f"sentinel parallel-syncs {SERVICE_NAME} 1\n",
            encoding="utf-8",
        )

    def command(self) -> list[str]:
        if os.path.basename(self.executable) == "redis-sentinel":
            return [self.executable, str(self.config_path)]
        return [self.executable, str(self.config_path), "--sentinel"]


class SentinelTopology:
    """A master, one replica and three Sentinels; :attr:`url` is the ``redis+sentinel://`` URL.

    ::

        with SentinelTopology() as topology:
            store = RedisStore(topology.url)
    """

    def __init__(self) -> None:
        self.master = RedisServerProcess()
        self.replica = RedisServerProcess(
            extra_args=["--replicaof", "127.0.0.1", str(self.master.port)]
        )
        self.sentinels = [SentinelProcess(self.master.port) for _ in range(3)]

    @property
    def servers(self) -> list[RedisServerProcess]:
        return [self.master, self.replica, *self.sentinels]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE_NAME}"

    def start(self) -> None:
        try:
            for server in self.servers:
                server.start()
            master = _client(self.master)
            wait_until(
                lambda: master.info("replication").get("slave0", {}).get("state") == "online",
                "the replica to sync",
            )
            for sentinel in self.sentinels:
                wait_until(
                    lambda sentinel=sentinel: self._sentinel_sees_everyone(sentinel),
                    "the Sentinels to find each other and the replica",
                )
            master.close()
        except RuntimeError as error:
            logs = self.logs()
            self.close()
            raise RuntimeError(f"{error}\n{logs}") from None

    def master_port(self) -> int:
        """The port of the master the Sentinels name now."""
        client = _client(self.sentinels[0])
        try:
            return int(client.sentinel_get_master_addr_by_name(SERVICE_NAME)[1])
        finally:
            client.close()

    def server_on(self, port: int) -> RedisServerProcess:
        return next(server for server in (self.master, self.replica) if server.port == port)

    def wait_for_failover_from(self, old_port: int, timeout: float = TOPOLOGY_TIMEOUT) -> None:
        """Wait until every Sentinel names another master and that master takes writes."""

        def promoted() -> bool:
            for sentinel in self.sentinels:
                client = _client(sentinel)
                try:
                    if int(client.sentinel_get_master_addr_by_name(SERVICE_NAME)[1]) == old_port:
                        return False
                finally:
                    client.close()
            new_master = _client(self.server_on(self.master_port()))
            try:
                return new_master.info("replication")["role"] == "master"
            finally:
                new_master.close()

        wait_until(promoted, "Sentinel to promote the replica", timeout)

    def logs(self) -> str:
        return "\n".join(f"--- port {s.port}:\n{s._log_tail()[-600:]}" for s in self.servers)

    def close(self) -> None:
        for server in self.servers:
            server.close()

    def __enter__(self) -> SentinelTopology:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @staticmethod
    def _sentinel_sees_everyone(sentinel: SentinelProcess) -> bool:
        client = _client(sentinel)
        try:
            state = client.sentinel_master(SERVICE_NAME)
            return bool(state["num-other-sentinels"] == 2 and state["num-slaves"] == 1)
        finally:
            client.close()


class ClusterTopology:
    """Three Redis Cluster masters (no replicas) sharing the 16384 slots; :attr:`url` is the
    ``redis+cluster://`` URL. ``cluster-require-full-coverage no``: while one master is down,
    the others keep serving their slots."""

    def __init__(self) -> None:
        self.bus_ports = [free_port() for _ in range(3)]
        self.nodes = [
            RedisServerProcess(extra_args=self._node_options(bus_port))
            for bus_port in self.bus_ports
        ]

    @staticmethod
    def _node_options(bus_port: int) -> list[str]:
        return [
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-port", str(bus_port),  # else port + 10000, which may pass 65535
            "--cluster-node-timeout", str(DOWN_AFTER_MS),
            "--cluster-require-full-coverage", "no",
        ]  # fmt: skip

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)

    def start(self) -> None:
        try:
            for node in self.nodes:
                node.start()
            clients = [_client(node) for node in self.nodes]
            share = CLUSTER_SLOTS // len(self.nodes)
            for index, client in enumerate(clients):
                first = index * share
                last = CLUSTER_SLOTS - 1 if index == len(clients) - 1 else first + share - 1
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
                client.execute_command("CLUSTER", "ADDSLOTS", *range(first, last + 1))
            for node, bus_port in zip(self.nodes[1:], self.bus_ports[1:], strict=True):
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus_port)
            for client in clients:
                wait_until(
                    lambda client=client: (
                        cluster_info(client)["cluster_state"] == "ok"
                        and cluster_info(client)["cluster_known_nodes"] == str(len(self.nodes))
                    ),
                    "the cluster to form",
                )
            for client in clients:
                client.close()
        except (RuntimeError, redis.RedisError) as error:
            logs = "\n".join(node._log_tail()[-600:] for node in self.nodes)
            self.close()
            raise RuntimeError(f"{error}\n{logs}") from None

    def client(self) -> RedisCluster:
        """A plain cluster client, for looking at raw keys."""
        return RedisCluster(
            startup_nodes=[ClusterNode("127.0.0.1", node.port) for node in self.nodes],
            socket_timeout=2,
        )

    def node_for(self, key: str) -> RedisServerProcess:
        """The master that holds ``key``'s slot."""
        client = self.client()
        try:
            port = client.get_node_from_key(key).port
        finally:
            client.close()
        return next(node for node in self.nodes if node.port == port)

    def close(self) -> None:
        for node in self.nodes:
            node.close()

    def __enter__(self) -> ClusterTopology:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _started(topology: ClusterTopology | SentinelTopology) -> None:
    try:
        topology.start()
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterTopology]:
    """A 3-master Redis Cluster shared by the session; tests must not stop its nodes."""
    topology = ClusterTopology()
    _started(topology)
    yield topology
    topology.close()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[SentinelTopology]:
    """A Sentinel-watched master and replica shared by the session; no failovers here."""
    topology = SentinelTopology()
    _started(topology)
    yield topology
    topology.close()


@pytest.fixture
def own_redis_cluster() -> Iterator[ClusterTopology]:
    """A private cluster the test may freeze or stop nodes of."""
    topology = ClusterTopology()
    _started(topology)
    yield topology
    topology.close()


@pytest.fixture
def own_redis_sentinel() -> Iterator[SentinelTopology]:
    """A private Sentinel topology the test may fail over."""
    topology = SentinelTopology()
    _started(topology)
    yield topology
    topology.close()


def topology_prefix() -> str:
    """A key prefix unique to one test (no hash tag: keys spread over the cluster)."""
    return f"flask-hybrid-test:{uuid4().hex}:"


def delete_under(client: redis.Redis | RedisCluster, prefix: str) -> None:
    """Delete every key under ``prefix`` (and the ``limits`` counters filed under it), one key
    at a time: on a cluster they live in many slots."""
    for pattern in (prefix, f"LIMITS:LIMITER/{prefix}"):
        for key in list(client.scan_iter(match=escape_glob(pattern) + "*", count=500)):
            client.delete(key)
