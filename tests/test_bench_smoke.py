"""The smoke run of ``make bench`` (``python -m bench --quick``) makes a complete table.

It starts its own Redis and gunicorn and drives them with wrk, as the full bench does; it
checks that every case is there and every figure is a positive number, never how large.
``make test`` installs wrk (Debian's package) and redis-server.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

from bench import report
from bench.jose import SIZES, size_label
from bench.streaming import GROWTH_TARGET, QUICK_SIZE
from bench.workload import CASES

ROOT = Path(__file__).resolve().parent.parent


def _positive(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_quick_bench_prints_a_complete_table(tmp_path: Path) -> None:
    chart = tmp_path / "performance.png"
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bench", "--quick", "--markdown"),
            *("--out", str(tmp_path), "--chart", str(chart)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "quick.json").read_text(encoding="utf-8"))

    expected_rows = (
        ["plain 1 KB JSON"]
        + [spec.name for spec in CASES]
        + ["handshake, paced, 16 clients", "handshake, burst of 16"]
        + ["10 MB J vs plain: time", "10 MB J: worker RSS growth"]
        + [report.stream_label(kind, QUICK_SIZE) for kind in ("upload", "download")]
        + [f"J open+seal {size_label(size)}, in process" for size in SIZES]
    )
    for row in expected_rows:
        assert row in done.stdout, row
    markdown = report.markdown_table(results)
    assert markdown in done.stdout
    assert len(markdown.splitlines()) == 2 + len(report.rows(results))

    assert _positive(results["t_rsa_ms"])
    assert _positive(results["plain"]["rate"])
    for spec in CASES:
        case = results["cases"][spec.name]
        for key in ("rate", "p50_ms", "p99_ms", "ratio_plain", "ratio_floor", "peak_rss"):
            assert _positive(case[key]), (spec.name, key, case[key])
        assert case["errors"] == 0, spec.name
    for kind in ("paced", "burst"):
        shake = results["handshake"][kind]
        assert shake["errors"] == 0 and shake["samples"] == 16
        assert _positive(shake["p50_ms"]) and _positive(shake["p99_ms"])
    big = results["big_body"]
    for key in ("plain_seconds", "j_seconds", "time_ratio", "j_growth"):
        assert _positive(big[key]), key
    assert big["plain_growth"] >= 0
    assert "H fresh key per request" in results["cases"]
    stream = results["streaming"]
    assert stream["size"] == QUICK_SIZE and stream["growth_target"] == GROWTH_TARGET
    assert "(quick; full run: 1 GiB)" in report.stream_label("upload", QUICK_SIZE)
    for kind in ("upload", "download"):
        found = stream[kind]
        assert found["size"] == QUICK_SIZE
        assert _positive(found["seconds"]) and _positive(found["throughput"]), kind
        assert found["growth"] >= 0, kind
    assert set(results["jose"]) == {size_label(size) for size in SIZES}
    for timing in results["jose"].values():
        assert all(
            _positive(timing[library]) for library in ("flask-hybrid", "joserfc", "jwcrypto")
        )
    assert chart.read_bytes().startswith(b"\x89PNG")
