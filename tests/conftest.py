"""Shared fixtures: the vectors, apps built on the vector keys, and real HTTP servers."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from playwright.sync_api import Browser, sync_playwright
from werkzeug.serving import BaseWSGIServer, make_server

import app as demo
from flask_hybrid.state import HybridState

pytest_plugins = ["tests.redis_server"]

#: The known-answer vectors, copied into the repository (see tests/vectors/README.md).
VECTORS_DIR = Path(__file__).resolve().parent / "vectors"
JWT_SECRET = "test-secret-" + "x" * 40


def load_vectors(name: str) -> Any:
    return json.loads((VECTORS_DIR / f"{name}.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def vector_keys() -> dict[str, Any]:
    return load_vectors("keys")


def base_config(vector_keys: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """A test configuration: the vector identity keys (identity_1 current), memory store."""
    config: dict[str, Any] = {
        "TESTING": True,
        "HYBRID_IDENTITY_KEYS": [
            vector_keys[name]["private_pem"] for name in vector_keys["identity_key_order"]
        ],
        "HYBRID_JWT_SECRET": JWT_SECRET,
        "HYBRID_STORE_URL": "memory://",
        "HYBRID_KEY_POOL_SIZE": 0,  # no background key generation competing for 2 cores
        "HYBRID_HANDSHAKE_LIMIT": "10000 per minute",
    }
    config.update(overrides)
    return config


@pytest.fixture
def make_app(vector_keys: dict[str, Any], tmp_path: Path) -> Callable[..., Flask]:
    """Build the demo app on the vector keys; keyword arguments override the config."""

    def factory(**overrides: Any) -> Flask:
        flask_app = demo.create_app(base_config(vector_keys, **overrides))
        flask_app.instance_path = str(tmp_path / "instance")
        return flask_app

    return factory


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask):
    return app.test_client()


def hybrid_state(flask_app: Flask) -> HybridState:
    return flask_app.extensions["hybrid"]


@dataclass
class LiveServer:
    """A real HTTP server (werkzeug, threaded) serving a Flask app on 127.0.0.1."""

    app: Flask
    server: BaseWSGIServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def start_live_server(flask_app: Flask) -> LiveServer:
    server = make_server("127.0.0.1", 0, flask_app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return LiveServer(flask_app, server, thread)


@pytest.fixture
def live_server_factory(make_app: Callable[..., Flask]) -> Iterator[Callable[..., LiveServer]]:
    """Start a live server on an app built with the given config overrides."""
    servers: list[LiveServer] = []

    def factory(**overrides: Any) -> LiveServer:
        live = start_live_server(make_app(**overrides))
        servers.append(live)
        return live

    yield factory
    for live in servers:
        live.stop()


@pytest.fixture(scope="module")
def live_server(vector_keys: dict[str, Any], tmp_path_factory: pytest.TempPathFactory):
    """One live demo server per test module (memory store, vector identity keys)."""
    flask_app = demo.create_app(base_config(vector_keys))
    flask_app.instance_path = str(tmp_path_factory.mktemp("instance"))
    live = start_live_server(flask_app)
    yield live
    live.stop()


#: Debian's Chromium, driven by Playwright (never a downloaded browser build).
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """One headless Chromium for every browser test of the run."""
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's Chromium "
            "(`make test` installs it: apt-get install chromium). Never `playwright install`.",
            pytrace=False,
        )
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()
