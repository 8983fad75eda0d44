"""Format H's streaming bounds: a 1 GiB upload and a 1 GiB download through gunicorn.

The published EHBP client (tinfoil-ehbp's ``ehbp.Client``) talks to the demo app served with
two routes of ``bench/wsgi.py`` (``FLASK_HYBRID_BENCH_STREAMING=1``) and ``HYBRID_MAX_BODY`` of
2 GiB: the upload is a generator of 64 KiB blocks that the client seals frame by frame and sends
chunked, and that the route reads from ``request.stream`` 64 KiB at a time, answering the size
and SHA-256 it saw; the download is a POST with a small sealed body (a bodiless GET would be
answered plain, as EHBP says) whose route yields the bytes 64 KiB at a time, opened and hashed
by the client as they arrive. Each is checked (size and hash) and measured once: the wall time
(client and server share the machine's cores, so the throughput is the pair's) and the serving
worker's memory growth, its peak resident memory during the transfer (``VmHWM``, reset before)
minus its resident memory before. The target is that neither grows a worker by more than
64 MiB, whatever the body's size: a bounded pipeline, not one that holds the body.

    python -m bench.streaming [--size MIB]
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

STREAMING_ENV = "FLASK_HYBRID_BENCH_STREAMING"
UPLOAD_PATH = "/bench/upload"
DOWNLOAD_PATH = "/bench/download"
PIECE = 64 * 1024
MIB = 1024 * 1024
FULL_SIZE = 1024 * MIB
QUICK_SIZE = 64 * MIB
GROWTH_TARGET = 64 * MIB
MAX_BODY = 2 * FULL_SIZE


def pattern_block() -> bytes:
    """The 64 KiB block both transfers repeat (so that the bench knows the hash ahead)."""
    return bytes(range(256)) * (PIECE // 256)


def blocks(size: int) -> Iterator[bytes]:
    """``size`` bytes as 64 KiB blocks (the last one shorter)."""
    block = pattern_block()
    for start in range(0, size, PIECE):
        yield block[: min(PIECE, size - start)]


def expected_sha256(size: int) -> str:
    digest = hashlib.sha256()
    for block in blocks(size):
        digest.update(block)
    return digest.hexdigest()


def size_label(size: int) -> str:
    return f"{size // 1024 // MIB} GiB" if size % (1024 * MIB) == 0 else f"{size // MIB} MiB"


@dataclass(frozen=True)
class Transfer:
    """One measured transfer."""

    size: int  # plaintext bytes
    seconds: float
    growth: int  # bytes: the serving worker's peak RSS during it minus its RSS before
    peaks_reset: bool  # False: the peak counts from the worker's earlier peak (no clear_refs)

    @property
    def throughput(self) -> float:
        """Plaintext bytes a second."""
        return self.size / self.seconds

    @property
    def met(self) -> bool:
        return self.growth <= GROWTH_TARGET


def _measure(server: Any, transfer: Callable[[], None], size: int) -> Transfer:
    peaks_reset = server.reset_peaks()
    before = server.rss()
    start = time.perf_counter()
    transfer()
    seconds = time.perf_counter() - start
    peaks = server.peak_rss()
    growth = max(peaks[pid] - before.get(pid, peaks[pid]) for pid in peaks)
    return Transfer(size, seconds, growth, peaks_reset)


def _upload(client: Any, size: int, expected: str) -> None:
    answer = client.post(
        UPLOAD_PATH, body=blocks(size), headers={"Content-Type": "application/octet-stream"}
    )
    if answer.status_code != 200:
        raise RuntimeError(f"upload answered {answer.status_code}: {answer.content[:300]!r}")
    seen = answer.json()
    if seen != {"size": size, "sha256": expected}:
        raise RuntimeError(f"upload of {size} bytes: the server saw {seen}")


def _download(client: Any, size: int, expected: str) -> None:
    digest, received = hashlib.sha256(), 0
    with client.stream(
        "POST",
        f"{DOWNLOAD_PATH}?size={size}",
        body=b"{}",
        headers={"Content-Type": "application/json"},
    ) as answer:
        if answer.status_code != 200 or "ehbp-response-nonce" not in answer.headers:
            raise RuntimeError(f"download answered {answer.status_code}, {answer.headers}")
        for piece in answer.iter_bytes():
            digest.update(piece)
            received += len(piece)
    if received != size or digest.hexdigest() != expected:
        raise RuntimeError(f"download of {size} bytes: got {received}, another hash")


def run(config: dict[str, Any], size: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Serve ``config`` (with a 2 GiB ``HYBRID_MAX_BODY``) plus the streaming routes; the
    upload's and the download's figures, as the JSON record holds them."""
    import ehbp

    from .server import Server

    expected = expected_sha256(size)
    config = {**config, "HYBRID_MAX_BODY": MAX_BODY}
    with Server(config, env={STREAMING_ENV: "1"}) as server:
        # Warm both workers (a new connection each, so the kernel spreads them) with small
        # transfers of each kind: what is measured is the big transfer, not a first import.
        for _ in range(4):
            with ehbp.Client.discover(server.base_url) as warm:
                _upload(warm, 4 * PIECE, expected_sha256(4 * PIECE))
                _download(warm, 4 * PIECE, expected_sha256(4 * PIECE))
        try:
            with ehbp.Client.discover(server.base_url) as client:
                upload = _measure(server, lambda: _upload(client, size, expected), size)
                log(f"{size_label(size)} H upload: {upload.seconds:.1f} s")
            with ehbp.Client.discover(server.base_url) as client:
                download = _measure(server, lambda: _download(client, size, expected), size)
                log(f"{size_label(size)} H download: {download.seconds:.1f} s")
        except Exception:
            log(f"gunicorn's log:\n{server.log()}")
            raise
    return {
        "size": size,
        "growth_target": GROWTH_TARGET,
        "max_body": MAX_BODY,
        "upload": {**asdict(upload), "throughput": upload.throughput, "met": upload.met},
        "download": {**asdict(download), "throughput": download.throughput, "met": download.met},
    }


def main(argv: list[str] | None = None) -> int:
    """The two transfers alone, on a bench configuration of their own."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from flask_hybrid.core import hpke

    from .server import bench_config, write_private_pem

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--size", type=int, default=FULL_SIZE // MIB, help="MiB (default 1024)")
    args = parser.parse_args(argv)
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="flask-hybrid-bench-") as scratch:
        identity = rsa.generate_private_key(65537, 2048)
        pem_path = write_private_pem(Path(scratch) / "identity.pem", identity)
        hpke_path = Path(scratch) / "hpke.pem"
        hpke_path.write_bytes(hpke.HpkePrivateKey.generate().private_pem())
        config = bench_config(pem_path, None, hpke_pem_path=str(hpke_path))
        results = run(config, args.size * MIB, log)
    for kind in ("upload", "download"):
        found = results[kind]
        print(
            f"{size_label(results['size'])} H {kind}: {found['seconds']:.2f} s, "
            f"{found['throughput'] / MIB:.0f} MiB/s, worker RSS growth "
            f"{found['growth'] / MIB:.1f} MiB (target ≤ {GROWTH_TARGET // MIB} MiB: "
            f"{'met' if found['met'] else 'not met'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
