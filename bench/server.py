"""The server under test: a Redis and gunicorn (gthread workers) serving the demo app.

Both run on free ports and are stopped by PID. The app gets its identity key and JWT secret
from the bench (so the bench can encrypt to it) and generous limits, so that what is measured is
the work of a request, not a refusal. Worker memory is read from ``/proc``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CONFIG_ENV = "FLASK_HYBRID_BENCH_CONFIG"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start within {timeout} s")


def _stop(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _proc_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


class Server:
    """Redis and gunicorn with ``workers`` gthread workers, as a context manager.

    ``config`` is added to the app's configuration (JSON-serialisable values); ``env`` to the
    gunicorn process's environment.
    """

    def __init__(
        self,
        config: dict[str, Any],
        *,
        workers: int = 2,
        threads: int = 4,
        env: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.workers = workers
        self.threads = threads
        self.env = env or {}
        self.port = 0
        self.redis_url = ""
        self._redis: subprocess.Popen[bytes] | None = None
        self._gunicorn: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> Server:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _start(self) -> None:
        redis_binary = shutil.which("redis-server")
        if redis_binary is None:
            raise RuntimeError("the bench needs redis-server (format S sessions span 2 workers)")
        redis_port = free_port()
        self._redis = subprocess.Popen(
            [
                *(redis_binary, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", ""),
                *("--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def redis_ready() -> bool:
            socket.create_connection(("127.0.0.1", redis_port), timeout=0.2).close()
            return True

        _wait_until(redis_ready, 10, "redis-server")
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        config = {"HYBRID_STORE_URL": self.redis_url, **self.config}
        self.port = free_port()
        gunicorn = Path(sys.executable).with_name("gunicorn")
        env = {**os.environ, CONFIG_ENV: json.dumps(config), **self.env}
        self._gunicorn = subprocess.Popen(
            [
                *(str(gunicorn), "--bind", f"127.0.0.1:{self.port}"),
                *("--workers", str(self.workers), "--worker-class", "gthread"),
                *("--threads", str(self.threads), "--timeout", "120", "--keep-alive", "30"),
                *("--log-level", "warning", "--chdir", str(ROOT), "bench.wsgi:app"),
            ],
            stdout=self._log,
            stderr=self._log,
            env=env,
        )

        def ready() -> bool:
            if self._gunicorn is not None and self._gunicorn.poll() is not None:
                raise RuntimeError(f"gunicorn exited:\n{self.log()}")
            with urllib.request.urlopen(self.base_url + "/hybrid/public-key", timeout=1) as answer:
                return bool(answer.status == 200) and len(self.worker_pids()) == self.workers

        _wait_until(ready, 60, "gunicorn")

    def log(self) -> str:
        """The end of gunicorn's output (errors of the app)."""
        if self._log.closed:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def stop(self) -> None:
        # Nothing of the bench is in flight by now, and gunicorn's own shutdown takes a second
        # or more: the master is killed first (so it makes no new workers), then its workers,
        # each by PID.
        workers = self.worker_pids()
        _stop(self._gunicorn, signal.SIGKILL)
        for pid in workers:
            with contextlib.suppress(OSError):  # gone already
                os.kill(pid, signal.SIGKILL)
        _stop(self._redis)
        self._gunicorn = self._redis = None
        self._log.close()

    # -- the workers -----------------------------------------------------------------------------
    def worker_pids(self) -> list[int]:
        if self._gunicorn is None:
            return []
        master = self._gunicorn.pid
        try:
            with open(f"/proc/{master}/task/{master}/children", encoding="ascii") as children:
                return [int(pid) for pid in children.read().split()]
        except OSError:
            return []

    def reset_peaks(self) -> bool:
        """Reset every worker's peak RSS (``VmHWM``); False where the kernel does not allow it."""
        done = True
        for pid in self.worker_pids():
            try:
                with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as clear:
                    clear.write("5")
            except OSError:
                done = False
        return done

    def rss(self) -> dict[int, int]:
        """Each worker's resident memory now, in bytes."""
        return {pid: _proc_kib(pid, "VmRSS") * 1024 for pid in self.worker_pids()}

    def peak_rss(self) -> dict[int, int]:
        """Each worker's peak resident memory since the last :meth:`reset_peaks`, in bytes."""
        return {pid: _proc_kib(pid, "VmHWM") * 1024 for pid in self.worker_pids()}


def write_private_pem(path: Path, key: Any) -> str:
    """Write an RSA private key as unencrypted PKCS#8 PEM (what ``HYBRID_IDENTITY_KEYS`` takes)
    and return the path as text."""
    from cryptography.hazmat.primitives import serialization

    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(path)


def bench_config(
    identity_pem_path: str,
    key_pool_size: int | None,
    *,
    local_counters: bool = False,
    hpke_pem_path: str | None = None,
) -> dict[str, Any]:
    """Generous limits: what is measured is the work of a request, not a refusal.

    ``hpke_pem_path``: format H's X25519 key (``HYBRID_HPKE_KEYS``), made by the bench so that
    it can seal to it; without it the demo app makes one in its instance folder.

    ``local_counters``: J's replay records and the rate-limit counters in each worker's memory
    instead of Redis, to see what their round trips cost. Not a deployment: a jti recorded by
    one worker is not seen by the other.
    """
    config: dict[str, Any] = {
        "HYBRID_IDENTITY_KEYS": [identity_pem_path],
        "HYBRID_JWT_SECRET": secrets.token_hex(32),
        "HYBRID_HANDSHAKE_LIMIT": "100000000 per minute",
        "HYBRID_JWE_LIMIT": "100000000 per minute",
        "HYBRID_REPLAY_WINDOW": 3600,
        # 10 MB of plaintext is 13.3 MB of base64 on the wire.
        "HYBRID_MAX_BODY": 32 * 1024 * 1024,
    }
    if hpke_pem_path is not None:
        config["HYBRID_HPKE_KEYS"] = [hpke_pem_path]
    if key_pool_size is not None:
        config["HYBRID_KEY_POOL_SIZE"] = key_pool_size
    if local_counters:
        config["HYBRID_REPLAY_STORE_URL"] = "memory://"
        config["HYBRID_RATELIMIT_STORAGE_URL"] = "memory://"
    return config
