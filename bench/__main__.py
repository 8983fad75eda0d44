"""``make bench``: every encrypted path against plain HTTP, in one run, as one table.

The demo app runs under gunicorn (2 gthread workers, a Redis store: format S sessions must be
seen by both workers) and ``wrk`` sends pre-built requests (``bench/workload.py``, cycled by
``bench/cycle.lua``). Every 1 KB case runs right after a plain run of its own, in every round;
its ratios are the median over the rounds of case/plain. A case that pays RSA private
operations is also set against its *floor*, the rate plain would reach if each request also
paid those operations and nothing else: ``W / (W / plain + ops * t_rsa)`` with W workers and
``t_rsa`` one RSA-2048 private operation timed in this run. Then the handshakes (paced and a
burst of 16), a 10 MB body against a plain one (time and worker memory), format H's 1 GiB
upload and download with the published EHBP client (``bench/streaming.py``; 64 MiB with
``--quick``), and, in process, the symmetric part of format J against joserfc and jwcrypto.

    python -m bench [--quick] [--rounds N] [--duration S] [--markdown] [--update-doc]
                    [--out DIR] [--chart PNG] [--key-pool-size N] [--local-counters]

Output: the table on stdout (``--markdown``: also as Markdown; ``--update-doc``: also into
docs/performance.md), the results as JSON in ``--out`` (default ``bench/results/``), and the
chart (default ``docs/performance.png``; with ``--quick`` or ``--local-counters``, beside the
JSON). ``python -m bench.pool`` compares session-key pool settings under handshake bursts;
``python -m bench.streaming`` runs the H transfers alone;
``python -m bench.memory`` and ``python -m bench.timing`` are the in-process memory and
PKCS#1 v1.5 timing benches.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from flask_hybrid.config import DEFAULTS, ConfigVars
from flask_hybrid.core import hpke
from flask_hybrid.core.ehbp import KEYS_PATH, RESPONSE_NONCE_HEADER

from . import bigbody, handshake, jose, loadgen, report, streaming
from .server import ROOT, Server, bench_config, write_private_pem
from .workload import CASES, ECHO_PATH, OAEP_SHA256, ORDER, Workload

WORKERS = 2
THREADS = 4
WRK_THREADS = 2
CONNECTIONS = 8


def time_rsa(key: rsa.RSAPrivateKey, budget: float) -> float:
    """Median seconds of one RSA-2048 private operation (an OAEP unwrap, as the server does)."""
    wrapped = key.public_key().encrypt(os.urandom(32), OAEP_SHA256)
    samples: list[float] = []
    deadline = time.perf_counter() + budget
    while time.perf_counter() < deadline or len(samples) < 5:
        start = time.perf_counter()
        for _ in range(10):
            key.decrypt(wrapped, OAEP_SHA256)
        samples.append((time.perf_counter() - start) / 10)
    return statistics.median(samples)


def _git_commit() -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        )
        return done.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _kid(base_url: str) -> str:
    with urllib.request.urlopen(base_url + "/hybrid/jwks.json", timeout=5) as answer:
        keys = json.load(answer)["keys"]
    return str(next(key["kid"] for key in keys if key.get("use", "enc") == "enc"))


def _hpke_public(base_url: str) -> bytes:
    """The X25519 key the server advertises for format H (its bare ``key_config``)."""
    with urllib.request.urlopen(base_url + KEYS_PATH, timeout=5) as answer:
        return hpke.KeyConfig.parse(answer.read()).public_key


def check_h(server: Server, workload: Workload) -> None:
    """One format H request of the case, its answer opened: the load runs count statuses only."""
    headers, body, sealer = workload.h_request(ORDER)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        connection.request(
            "POST", ECHO_PATH, body=body, headers={"Content-Type": "application/json", **headers}
        )
        answer = connection.getresponse()
        wire = answer.read()
        nonce = answer.getheader(RESPONSE_NONCE_HEADER)
    finally:
        connection.close()
    if answer.status != 200 or nonce is None:
        raise RuntimeError(f"format H answered {answer.status} ({wire[:200]!r}):\n{server.log()}")
    opener = sealer.response_opener(nonce)
    plaintext = b"".join(opener.feed(wire))
    opener.finish()
    if json.loads(plaintext) != {"received": json.loads(ORDER)}:
        raise RuntimeError(f"format H's echo is not the order: {plaintext[:200]!r}")


def _load_run(server: Server, case: loadgen.Case, seconds: int) -> dict[str, Any]:
    server.reset_peaks()
    result = loadgen.run_wrk(
        server.base_url, case, seconds=seconds, threads=WRK_THREADS, connections=CONNECTIONS
    )
    return {
        "rate": result.rate,
        "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms,
        "requests": result.requests,
        "errors": result.errors,
        "distinct": result.distinct,
        "peak_rss": max(server.peak_rss().values()),
    }


def run_cases(
    server: Server,
    workload: Workload,
    rounds: int,
    seconds: int,
    *,
    warm: bool,
    shared_plain: bool,
    log: Any,
) -> tuple[dict[str, Any], dict[str, Any], list[float], float]:
    """Every 1 KB case after its own plain run, ``rounds`` times; with ``t_rsa`` each round.

    ``shared_plain`` (the smoke run) runs plain once a round, before all the cases.
    """
    key = rsa.generate_private_key(65537, 2048)
    plain_case = workload.case("plain", 0)
    if warm:
        loadgen.run_wrk(server.base_url, plain_case, seconds=1, connections=CONNECTIONS)
        for spec in CASES:
            loadgen.run_wrk(
                server.base_url, workload.case(spec.name, 2000), seconds=1, connections=CONNECTIONS
            )
    runs: dict[str, list[dict[str, Any]]] = {spec.name: [] for spec in CASES}
    runs["plain"] = []
    t_rsa: list[float] = []
    for number in range(rounds):
        t_rsa.append(time_rsa(key, 0.3))
        plain: dict[str, Any] = {}
        for spec in CASES:
            if shared_plain and plain:  # the smoke run: one plain run for all its cases
                plain = dict(plain)
            else:
                plain = _load_run(server, plain_case, seconds)
                runs["plain"].append(plain)
            trip_rate = plain["rate"]
            if spec.store_trip:  # plain + the one store round trip this case makes
                trip_case = workload.case(f"plain+{spec.store_trip}", 0)
                trip_rate = _load_run(server, trip_case, seconds)["rate"]
            # Enough distinct requests for the whole run: a case rarely outruns its plain run
            # or its own earlier rounds by 30 %; the smoke run's one plain run may be from a
            # slower moment, so it makes more. (Format H, with no RSA work, can outrun plain.)
            rate = max([plain["rate"]] + [run["rate"] for run in runs[spec.name]])
            count = math.ceil(rate * seconds * (2.5 if shared_plain else 1.3)) + 200
            case = workload.case(spec.name, count)
            measured = _load_run(server, case, seconds)
            measured["plain_rate"] = plain["rate"]
            measured["trip_rate"] = trip_rate
            runs[spec.name].append(measured)
            log(
                f"round {number + 1}/{rounds}: {spec.name:<13} {measured['rate']:7.0f} req/s, "
                f"plain {plain['rate']:7.0f} req/s"
            )
    rsa_seconds = statistics.median(t_rsa)
    cases: dict[str, Any] = {}
    for spec in CASES:
        measured_runs = runs[spec.name]
        ratios_plain = [run["rate"] / run["plain_rate"] for run in measured_runs]
        # The floor: plain with the store round trip the case makes, plus its RSA work.
        floors = [
            WORKERS / (WORKERS / run["trip_rate"] + spec.rsa_ops * rsa_seconds)
            for run in measured_runs
        ]
        ratios_floor = [
            run["rate"] / floor for run, floor in zip(measured_runs, floors, strict=True)
        ]
        ratio = statistics.median(ratios_floor if spec.target_of == "floor" else ratios_plain)
        cases[spec.name] = {
            "rate": statistics.median(run["rate"] for run in measured_runs),
            "p50_ms": statistics.median(run["p50_ms"] for run in measured_runs),
            "p99_ms": statistics.median(run["p99_ms"] for run in measured_runs),
            "peak_rss": max(run["peak_rss"] for run in measured_runs),
            "ratio_plain": statistics.median(ratios_plain),
            "ratio_floor": statistics.median(ratios_floor),
            "floor_rate": statistics.median(floors),
            "rsa_ops": spec.rsa_ops,
            "store_trip": spec.store_trip,
            "target": spec.target,
            "target_of": spec.target_of,
            "errors": sum(run["errors"] for run in measured_runs),
            "resent": any(run["requests"] > run["distinct"] for run in measured_runs),
            "met": ratio >= spec.target,
            "rounds": measured_runs,
        }
    plain_runs = runs["plain"]
    plain_summary = {
        "rate": statistics.median(run["rate"] for run in plain_runs),
        "p50_ms": statistics.median(run["p50_ms"] for run in plain_runs),
        "p99_ms": statistics.median(run["p99_ms"] for run in plain_runs),
        "peak_rss": max(run["peak_rss"] for run in plain_runs),
        "errors": sum(run["errors"] for run in plain_runs),
        "rounds": plain_runs,
    }
    return plain_summary, cases, t_rsa, rsa_seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 s a case, 1 round")
    parser.add_argument("--rounds", type=int, help="rounds of every case (default 3)")
    parser.add_argument("--duration", type=int, help="seconds of each wrk run (default 4)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown too")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--chart", type=Path, help="the PNG (default docs/performance.png)")
    parser.add_argument(
        "--key-pool-size", type=int, help="HYBRID_KEY_POOL_SIZE (default: the app's)"
    )
    parser.add_argument(
        "--update-doc",
        action="store_true",
        help="write the table into docs/performance.md (between its bench:table markers)",
    )
    parser.add_argument(
        "--local-counters",
        action="store_true",
        help="J replay records and rate limits in worker memory, not Redis (to see their cost)",
    )
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.duration or (1 if args.quick else 4)
    # Only a full run with the deployment's settings speaks for docs/performance.md.
    variant = "quick" if args.quick else "local-counters" if args.local_counters else ""
    chart_path = args.chart or (
        args.out / f"performance-{variant}.png" if variant else ROOT / "docs" / "performance.png"
    )
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    identity = rsa.generate_private_key(65537, 2048)
    with tempfile.TemporaryDirectory(prefix="flask-hybrid-bench-") as scratch:
        pem_path = write_private_pem(Path(scratch) / "identity.pem", identity)
        hpke_path = Path(scratch) / "hpke.pem"
        hpke_path.write_bytes(hpke.HpkePrivateKey.generate().private_pem())
        config = bench_config(
            pem_path,
            args.key_pool_size,
            local_counters=args.local_counters,
            hpke_pem_path=str(hpke_path),
        )
        with Server(config, workers=WORKERS, threads=THREADS) as server:
            log(f"gunicorn on {server.base_url}, workers {server.worker_pids()}")
            pool_size = int(config.get("HYBRID_KEY_POOL_SIZE", DEFAULTS[ConfigVars.KEY_POOL_SIZE]))
            handshakes = handshake.measure(server, rounds, pool_size, log, quick=args.quick)
            workload = Workload(identity.public_key(), _kid(server.base_url))
            session = handshake.handshake("127.0.0.1", server.port)
            workload.start_session(session.token, session.public_key, session.device_id)
            workload.hpke_public = _hpke_public(server.base_url)
            check_h(server, workload)
            # Let the pools refill (quiet period, then key generation) before the load runs,
            # so that no key generation competes with the first cases.
            time.sleep(0.5 if args.quick else 0.5 + 0.12 * pool_size)
            plain, cases, t_rsa_rounds, t_rsa = run_cases(
                server,
                workload,
                rounds,
                seconds,
                warm=not args.quick,
                shared_plain=args.quick,
                log=log,
            )
            big = bigbody.run(server, config, workload, repeats=1 if args.quick else 3)
            log("10 MB body done")
        # On a server of its own, with HYBRID_MAX_BODY of 2 GiB and the streaming routes.
        size = streaming.QUICK_SIZE if args.quick else streaming.FULL_SIZE
        streamed = streaming.run(config, size, log)
        jose_results = jose.compare(budget=0.1 if args.quick else 2.0)
        log("in-process J comparison done")

    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "commit": _git_commit(),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        },
        "settings": {
            "quick": args.quick,
            "rounds": rounds,
            "duration": seconds,
            "workers": WORKERS,
            "threads": THREADS,
            "wrk_threads": WRK_THREADS,
            "connections": CONNECTIONS,
            "key_pool_size": pool_size,
            "local_counters": args.local_counters,
            "handshake_clients": handshake.CLIENTS,
            "paced_interval": handshake.PACED_INTERVAL,
        },
        "t_rsa_ms": t_rsa * 1000,
        "t_rsa_rounds_ms": [value * 1000 for value in t_rsa_rounds],
        "plain": plain,
        "cases": cases,
        "handshake": handshakes,
        "big_body": {
            "size": big.size,
            "wire_size": big.wire_size,
            "plain_seconds": big.plain_seconds,
            "j_seconds": big.j_seconds,
            "time_ratio": big.j_seconds / big.plain_seconds,
            "plain_growth": big.plain_growth,
            "j_growth": big.j_growth,
            "peaks_reset": big.peaks_reset,
        },
        "streaming": streamed,
        "jose": jose_results,
    }
    record = args.out / (f"{variant}.json" if variant else "latest.json")
    report.save_json(results, record)
    report.chart(results, chart_path)
    print(report.text_table(results))
    print()
    print(report.footnote(results))
    if args.markdown:
        print()
        print(report.markdown_table(results))
    if args.update_doc and not variant:
        report.update_doc(results, ROOT / "docs" / "performance.md")
    problems = [
        f"{name}: {found['errors']} errors" for name, found in cases.items() if found["errors"]
    ]
    problems += [f"{name}: requests sent again" for name, found in cases.items() if found["resent"]]
    problems += [
        f"H {kind}: worker peaks not reset (growth counts from an earlier peak)"
        for kind in ("upload", "download")
        if not streamed[kind]["peaks_reset"]
    ]
    for problem in problems:
        print(f"warning: {problem}", file=sys.stderr)
    log(f"done; JSON in {record}, chart in {chart_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
