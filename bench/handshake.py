"""Format S handshakes over real HTTP: one for the bench's session, and paced and burst runs.

Each handshake is a new connection, as a new client's would be. Latency is measured from the
connection's opening to the last byte of the answer.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import statistics
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .workload import content_digest

if TYPE_CHECKING:
    from .server import Server

HANDSHAKE_PATH = "/hybrid/session"
CLIENTS = 16
PACED_INTERVAL = 0.05  # seconds between the paced handshakes' starts
TARGETS_MS = {"paced": 15.0, "burst": 100.0}  # p99


@dataclass(frozen=True)
class Session:
    token: str
    public_key: rsa.RSAPublicKey
    device_id: str


def _post(host: str, port: int, body: bytes) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.request(
            "POST",
            HANDSHAKE_PATH,
            body=body,
            headers={"Content-Type": "application/json", "Content-Digest": content_digest(body)},
        )
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()


def _handshake_body(cek: bytes, device_id: str) -> bytes:
    return json.dumps({"aesKey": base64.b64encode(cek).decode(), "deviceId": device_id}).encode()


def handshake(host: str, port: int, device_id: str = "bench") -> Session:
    """One S handshake; the session's token and public key (from the sealed answer)."""
    cek = AESGCM.generate_key(256)
    status, body = _post(host, port, _handshake_body(cek, device_id))
    if status != 201:
        raise RuntimeError(f"handshake answered {status}: {body[:200]!r}")
    sealed = json.loads(body)
    iv = base64.b64decode(sealed["iv"])
    ciphertext = base64.b64decode(sealed["encryptedData"]) + base64.b64decode(sealed["authTag"])
    session = json.loads(AESGCM(cek).decrypt(iv, ciphertext, None))
    public_key = serialization.load_pem_public_key(session["publicKey"].encode())
    assert isinstance(public_key, rsa.RSAPublicKey)
    return Session(session["token"], public_key, device_id)


def _timed_handshake(host: str, port: int, results: list[float], errors: list[int]) -> None:
    body = _handshake_body(os.urandom(32), f"client-{os.urandom(4).hex()}")
    start = time.perf_counter()
    status, _ = _post(host, port, body)
    elapsed = time.perf_counter() - start
    if status == 201:
        results.append(elapsed)
    else:
        errors.append(status)


def paced(host: str, port: int, clients: int, interval: float) -> tuple[list[float], int]:
    """``clients`` handshakes one after another, ``interval`` seconds apart (start to start)."""
    results: list[float] = []
    errors: list[int] = []
    start = time.perf_counter()
    for number in range(clients):
        delay = start + number * interval - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        _timed_handshake(host, port, results, errors)
    return results, len(errors)


def burst(host: str, port: int, clients: int) -> tuple[list[float], int]:
    """``clients`` handshakes at the same instant, one thread each."""
    results: list[float] = []
    errors: list[int] = []
    gate = threading.Barrier(clients)

    def client() -> None:
        gate.wait()
        _timed_handshake(host, port, results, errors)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, len(errors)


def percentile(samples: list[float], fraction: float) -> float:
    """The ``fraction`` quantile by linear interpolation (p99 of 16 samples ~ their maximum)."""
    if not samples:
        return float("nan")
    if len(samples) == 1:
        return samples[0]
    return statistics.quantiles(samples, n=100, method="inclusive")[round(fraction * 100) - 1]


def measure(
    server: Server,
    rounds: int,
    pool_size: int,
    log: Any,
    *,
    quick: bool = False,
    refill: float | None = None,
) -> dict[str, Any]:
    """Paced and burst handshakes, ``rounds`` times; p50 and p99 over all of them.

    Before each, the workers are left ``refill`` seconds to fill their pools: by default the
    quiet period and a key every ~120 ms (~80 ms of a core each, two workers on two cores, some
    margin); the smoke run leaves half a second, its figures are not meant to be read.
    """
    if refill is None:
        refill = 0.5 if quick else 0.5 + 0.12 * pool_size
    for _ in range(4 if quick else 8):  # start the workers' pools (new connections: any worker)
        handshake("127.0.0.1", server.port, "warm-up")
    samples: dict[str, list[float]] = {"paced": [], "burst": []}
    errors = {"paced": 0, "burst": 0}
    for number in range(rounds):
        time.sleep(refill)
        found, failed = paced("127.0.0.1", server.port, CLIENTS, PACED_INTERVAL)
        samples["paced"] += found
        errors["paced"] += failed
        time.sleep(refill)
        found, failed = burst("127.0.0.1", server.port, CLIENTS)
        samples["burst"] += found
        errors["burst"] += failed
        log(f"handshakes, round {number + 1}/{rounds} done")
    results = {}
    for kind, found in samples.items():
        p99 = percentile(found, 0.99) * 1000
        results[kind] = {
            "p50_ms": percentile(found, 0.50) * 1000,
            "p99_ms": p99,
            "max_ms": max(found) * 1000,
            "samples": len(found),
            "errors": errors[kind],
            "met": errors[kind] == 0 and p99 <= TARGETS_MS[kind],
        }
    return results
