"""What a user installs: the version, the metadata, and what the sdist and the wheel carry."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import flask_hybrid

ROOT = Path(__file__).resolve().parents[1]


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
