"""A 10 MB body: format J against a plain POST of the same document, time and worker memory.

Time: requests one at a time on the bench's server, alternating plain and J after a warm-up of
each. Memory: a worker keeps what its allocator took for an earlier big request, so each
measurement starts a fresh server, warms it with small requests, and sends one 10 MB request;
the growth is the serving worker's peak resident memory during it (``VmHWM``, reset before it)
minus its resident memory before it: what a worker needs to serve its first such request.
"""

from __future__ import annotations

import http.client
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from .server import Server
from .workload import ECHO_PATH, ORDER, Workload, big_document, content_digest

BODY_SIZE = 10 * 1024 * 1024


@dataclass(frozen=True)
class BigBodyResult:
    size: int  # plaintext bytes
    wire_size: int  # J body bytes
    plain_seconds: float
    j_seconds: float
    plain_growth: float  # worker RSS growth / plaintext size
    j_growth: float
    peaks_reset: bool  # False: growth counts from the worker's earlier peak (no clear_refs)


def _post(port: int, body: bytes, content_type: str) -> float:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        headers = {"Content-Type": content_type, "Content-Digest": content_digest(body)}
        start = time.perf_counter()
        connection.request("POST", ECHO_PATH, body=body, headers=headers)
        answer = connection.getresponse()
        data = answer.read()
        elapsed = time.perf_counter() - start
        if answer.status != 200:
            raise RuntimeError(f"10 MB {content_type} answered {answer.status}: {data[:200]!r}")
        return elapsed
    finally:
        connection.close()


def _growth(
    config: dict[str, Any], body: bytes, content_type: str, warm: list[tuple[bytes, str]]
) -> int:
    with Server(config) as server:
        for small, small_type in warm:  # both workers, most likely: a new connection each
            _post(server.port, small, small_type)
        server.reset_peaks()
        before = server.rss()
        _post(server.port, body, content_type)
        peaks = server.peak_rss()
        return max(peaks[pid] - before.get(pid, peaks[pid]) for pid in peaks)


def run(
    server: Server,
    config: dict[str, Any],
    workload: Workload,
    *,
    repeats: int = 3,
    size: int = BODY_SIZE,
) -> BigBodyResult:
    """Time on ``server``; memory on fresh servers with ``config``."""
    plaintext = big_document(size)
    j_bodies = [workload.j_body(plaintext, reuse=False) for _ in range(2 * repeats + 1)]
    _post(server.port, plaintext, "application/json")  # warm-up: buffers, allocator arenas
    _post(server.port, j_bodies[0], "application/jose")
    plain_seconds: list[float] = []
    j_seconds: list[float] = []
    for body in j_bodies[1 : repeats + 1]:
        plain_seconds.append(_post(server.port, plaintext, "application/json"))
        j_seconds.append(_post(server.port, body, "application/jose"))
    plain_growth: list[int] = []
    j_growth: list[int] = []
    # Each growth on a fresh server; plain's and J's side by side (memory, not time, is read).
    with ThreadPoolExecutor(max_workers=2) as pool:
        for body in j_bodies[repeats + 1 :]:
            warm = [(ORDER, "application/json")] * 4
            warm += [(workload.j_body(ORDER, reuse=False), "application/jose") for _ in range(4)]
            plain_run = pool.submit(_growth, config, plaintext, "application/json", warm)
            j_run = pool.submit(_growth, config, body, "application/jose", warm)
            plain_growth.append(plain_run.result())
            j_growth.append(j_run.result())
    return BigBodyResult(
        size=size,
        wire_size=len(j_bodies[0]),
        plain_seconds=statistics.median(plain_seconds),
        j_seconds=statistics.median(j_seconds),
        plain_growth=statistics.median(plain_growth) / size,
        j_growth=statistics.median(j_growth) / size,
        peaks_reset=server.reset_peaks(),
    )
