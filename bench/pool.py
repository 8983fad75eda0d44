"""Which session-key pool serves a burst of handshakes: pool size against refill policy.

    python -m bench.pool [--rounds N] [--sizes 4 16 32] [--quiet 0 0.25]

For each pool size (``HYBRID_KEY_POOL_SIZE``) and quiet period (seconds without a handshake
before the pool refills; 0 is the refill of flask-hybrid 0.1, which began as soon as a key was
taken), a fresh server serves 16 paced handshakes and a burst of 16, ``--rounds`` times, with
time to refill in between. Prints a Markdown table of p50 and p99.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from . import handshake
from .server import Server, bench_config, write_private_pem


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--quiet", type=float, nargs="+", default=[0.0, 0.25])
    args = parser.parse_args(argv)
    identity = rsa.generate_private_key(65537, 2048)
    lines = [
        "| pool size | quiet period | paced p50 | paced p99 | burst p50 | burst p99 |",
        "|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="flask-hybrid-bench-") as scratch:
        pem_path = write_private_pem(Path(scratch) / "identity.pem", identity)
        for size in args.sizes:
            for quiet in args.quiet:
                config = bench_config(pem_path, size)
                env = {"FLASK_HYBRID_BENCH_POOL_QUIET": str(quiet)}
                with Server(config, env=env) as server:
                    found = handshake.measure(server, args.rounds, size, lambda _: None)
                paced, burst = found["paced"], found["burst"]
                lines.append(
                    f"| {size} | {quiet:g} s | {paced['p50_ms']:.1f} ms | {paced['p99_ms']:.1f} ms "
                    f"| {burst['p50_ms']:.1f} ms | {burst['p99_ms']:.1f} ms |"
                )
                print(lines[-1], file=sys.stderr, flush=True)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
