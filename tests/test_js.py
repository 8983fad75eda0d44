"""The browser module's own tests, run by Node's test runner from here so ``make test`` runs all.

The offline files check hybrid.js against the vectors and the real ``jose``/``jsencrypt`` npm
packages; the live file drives a real server started by this suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import VECTORS_DIR, LiveServer

ROOT = Path(__file__).resolve().parents[1]
JS_TESTS = ROOT / "tests" / "js"


def run_node_tests(test_file: str, **env: str) -> None:
    node = shutil.which("node")
    assert node, "Node.js is required for the browser module's tests"
    assert (ROOT / "node_modules" / "jose").is_dir(), "run `npm ci` (make test does)"
    result = subprocess.run(
        [node, "--test", "--test-reporter=spec", str(JS_TESTS / test_file)],
        cwd=ROOT,
        env={**os.environ, "FH_VECTORS_DIR": str(VECTORS_DIR), **env},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    info = "\N{INFORMATION SOURCE}"  # Node's spec reporter marks its summary lines with it
    summary = "\n".join(line for line in result.stdout.splitlines() if line.startswith(info))
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}"
    assert f"{info} fail 0" in summary and f"{info} pass 0" not in summary, summary


@pytest.mark.parametrize(
    "test_file",
    [
        "vectors.test.mjs",
        "interop.test.mjs",
        "client.test.mjs",
        "signature.test.mjs",
        "ehbp.test.mjs",
    ],
)
def test_browser_module_offline(test_file: str) -> None:
    run_node_tests(test_file)


def test_browser_module_against_live_server(live_server: LiveServer) -> None:
    run_node_tests("live.test.mjs", FH_BASE_URL=live_server.url)
