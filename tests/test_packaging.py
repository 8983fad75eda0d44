"""What a user installs: the version, the metadata, and what the sdist and the wheel carry."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import flask_hybrid

ROOT = Path(__file__).resolve().parents[1]

#: Files an unpacked sdist needs for ``make test`` and ``make run``, besides the package itself.
SDIST_FILES = {
    "pyproject.toml",
    "README.md",
    "LICENSE",
    "CHANGELOG.md",
    "Makefile",
    "app.py",
    "package.json",
    "package-lock.json",
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/builders.py",
    "tests/redis_server.py",
    "tests/protocol_client.py",
    "tests/vectors/keys.json",
    "tests/js/client.test.mjs",
    "docs/PROTOCOL.md",
    "frontend/templates/index.html",
}
#: Folders the sdist carries whole (without bytecode).
SDIST_FOLDERS = ("tests", "docs", "frontend")
WHEEL_FILES = {
    "flask_hybrid/py.typed",
    "flask_hybrid/static/hybrid.js",
    "flask_hybrid/static/hybrid.d.ts",
    "flask_hybrid/static/package.json",
}


def test_version_is_the_installed_distribution_version() -> None:
    # pyproject reads the version from flask_hybrid.__version__; a stale install shows here
    assert flask_hybrid.__version__ == importlib.metadata.version("flask-hybrid")


def test_metadata_names_the_license_and_the_project() -> None:
    metadata = importlib.metadata.metadata("flask-hybrid")
    assert metadata["License-Expression"] == "MIT"
    assert (ROOT / "LICENSE").read_text(encoding="utf-8").startswith("MIT License\n")
    classifiers = metadata.get_all("Classifier") or []
    assert {
        "Framework :: Flask",
        "Typing :: Typed",
        "Programming Language :: Python :: 3.10",
    } <= set(classifiers)
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL") or [])
    assert set(urls) == {"Homepage", "Documentation", "Source", "Changelog", "Issues"}


def build(source: Path, kind: str, outdir: Path) -> Path:
    """``python -m build --<kind> --no-isolation`` (the venv's setuptools, no download)."""
    result = subprocess.run(
        [sys.executable, "-m", "build", f"--{kind}", "--no-isolation", "--outdir", str(outdir)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (artifact,) = outdir.glob("*.tar.gz" if kind == "sdist" else "*.whl")
    return artifact


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(ROOT, "sdist", tmp_path_factory.mktemp("sdist"))


@pytest.fixture(scope="module")
def sdist_names(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as archive:
        # every member sits under "flask_hybrid-<version>/"
        return {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}


def test_sdist_carries_the_tests_their_data_the_docs_and_the_demo(sdist_names: set[str]) -> None:
    expected = set(SDIST_FILES)
    expected |= {path.relative_to(ROOT).as_posix() for path in (ROOT / "tests").glob("test_*.py")}
    for folder in SDIST_FOLDERS:
        for path in (ROOT / folder).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                expected.add(path.relative_to(ROOT).as_posix())
    assert expected <= sdist_names, sorted(expected - sdist_names)


def test_sdist_leaves_out_environments_and_build_output(sdist_names: set[str]) -> None:
    unwanted = {".venv", "node_modules", "__pycache__", "test-output", "instance", ".git"}
    assert not [name for name in sdist_names if unwanted & set(name.split("/"))]
    assert not [name for name in sdist_names if name.endswith(".pyc")]


def test_wheel_built_from_the_sdist_carries_types_and_the_browser_module(
    sdist: Path, tmp_path: Path
) -> None:
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path / "unpacked", filter="data")
    (source,) = (tmp_path / "unpacked").iterdir()
    wheel = build(source, "wheel", tmp_path / "wheel")
    assert wheel.name.startswith(f"flask_hybrid-{flask_hybrid.__version__}-")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert names >= WHEEL_FILES, sorted(WHEEL_FILES - names)
    assert not [name for name in names if not name.startswith("flask_hybrid")]  # no tests/, app.py
