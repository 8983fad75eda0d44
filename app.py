"""The flask-hybrid demo: the blueprint, the middleware, a page at ``/`` and ``POST /api/echo``.

``make run`` serves it on http://127.0.0.1:5000 (``PORT`` overrides) with the in-process store,
or Redis when ``REDIS_URL`` is set: one server (``redis://host:6379/0``), a Redis Cluster
(``redis+cluster://host:port,host:port``) or a Sentinel-managed master
(``redis+sentinel://host:port,host:port/service_name``). ``gunicorn app:app`` serves it too
(with several processes, set ``REDIS_URL``: the in-process store is per process).

Every ``HYBRID_*`` setting may come from the environment, e.g.
``HYBRID_MAX_BODY=1073741824 make run``. Values are read as an int (``1073741824``), a float
(``0.25``), a boolean (``true`` / ``false``, any case) or else as the string given
(``HYBRID_FORMATS=S,J``, ``HYBRID_HANDSHAKE_LIMIT="10 per minute"``). ``HYBRID_STORE_URL`` wins
over ``REDIS_URL``; the ``config`` argument of :func:`create_app` wins over both.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, render_template, request

from flask_hybrid import HybridEncryption

FRONTEND = Path(__file__).resolve().parent / "frontend"
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?[0-9]*\.[0-9]+")


def env_value(text: str) -> int | float | bool | str:
    """An environment variable's text as the config value it most likely means."""
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def config_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``HYBRID_*`` settings in ``environ`` (and ``REDIS_URL`` as the store), parsed."""
    config: dict[str, Any] = {}
    if environ.get("REDIS_URL"):
        config["HYBRID_STORE_URL"] = environ["REDIS_URL"]
    for name, text in environ.items():
        if name.startswith("HYBRID_"):
            config[name] = env_value(text)
    return config


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The demo app; ``config`` overrides for tests."""
    app = Flask(
        __name__,
        template_folder=str(FRONTEND / "templates"),
        static_folder=str(FRONTEND / "static"),
    )
    app.config["HYBRID_DEVELOPMENT"] = True  # a demo: keys are made in the instance folder
    app.config.update(config_from_env(os.environ))
    app.config.update(config or {})
    # The echo answers the members in the order they came (Flask sorts them by default).
    app.json.sort_keys = False  # type: ignore[attr-defined]
    HybridEncryption(app)

    @app.get("/")
    def index() -> str:
        return render_template("index.html")

    @app.post("/api/echo")
    def echo() -> dict[str, Any]:
        return {"received": request.get_json()}

    return app


app = create_app()

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(os.environ.get("PORT", "5000")))
