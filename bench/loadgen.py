"""Drive the server with ``wrk``: pre-built requests, cycled by ``bench/cycle.lua``.

Each request is written out whole (request line, headers, body), so a header that differs from
one request to the next (format H's ``Ehbp-Encapsulated-Key``) is sent as built: the Lua script
hands out raw requests and adds nothing.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .workload import Case

SCRIPT = Path(__file__).resolve().parent / "cycle.lua"


@dataclass(frozen=True)
class LoadResult:
    """What one wrk run measured."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int  # non-2xx answers, socket errors and timeouts
    distinct: int  # requests made ahead; fewer than ``requests`` means some were sent again

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def raw_request(case: Case, body: bytes, host: str, each: dict[str, str] | None = None) -> bytes:
    """One HTTP/1.1 request as it goes on the wire; ``each``: this request's own headers."""
    from .workload import content_digest

    headers = {"Host": host, **case.headers, **(each or {}), "Content-Length": str(len(body))}
    if case.digest:
        headers["Content-Digest"] = content_digest(body)
    head = f"POST {case.path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


def run_wrk(
    base_url: str,
    case: Case,
    *,
    seconds: int,
    threads: int = 2,
    connections: int = 8,
) -> LoadResult:
    """Send ``case``'s requests for ``seconds`` with wrk; the result of its ``done()``."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise RuntimeError("the bench needs wrk (Debian: apt-get install wrk)")
    host = base_url.split("://", 1)[1]
    with tempfile.NamedTemporaryFile(prefix="bench-requests-", suffix=".bin") as requests:
        if case.each and len(case.each) != len(case.bodies):
            raise ValueError(
                f"{case.name}: {len(case.each)} header sets, {len(case.bodies)} bodies"
            )
        for index, body in enumerate(case.bodies):
            raw = raw_request(case, body, host, case.each[index] if case.each else None)
            requests.write(b"%d\n" % len(raw) + raw)
        requests.flush()
        completed = subprocess.run(
            [
                *(wrk, "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s"),
                *("--timeout", "10s", "-s", str(SCRIPT), base_url),
                *("--", requests.name, str(threads)),  # the script's arguments
            ],
            capture_output=True,
            text=True,
            check=False,
        )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr[-2000:]}")
    summary = json.loads(lines[-1])
    return LoadResult(
        requests=summary["requests"],
        seconds=summary["duration_us"] / 1e6,
        p50_ms=summary["p50_us"] / 1000,
        p99_ms=summary["p99_us"] / 1000,
        errors=sum(summary[name] for name in ("connect", "read", "write", "status", "timeout")),
        distinct=len(case.bodies),
    )
