"""The flask-hybrid demo: the blueprint, the middleware, a page at ``/`` and ``POST /api/echo``.

``make run`` serves it on http://127.0.0.1:5000 (``PORT`` overrides) with the in-process store,
or Redis when ``REDIS_URL`` is set. ``gunicorn app:app`` serves it too (with several processes,
set ``REDIS_URL``: the in-process store is per process).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from flask import Flask, render_template, request

from flask_hybrid import HybridEncryption

FRONTEND = Path(__file__).resolve().parent / "frontend"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """The demo app; ``config`` overrides for tests."""
    app = Flask(
        __name__,
        template_folder=str(FRONTEND / "templates"),
        static_folder=str(FRONTEND / "static"),
    )
    app.config["HYBRID_DEVELOPMENT"] = True  # a demo: keys are made in the instance folder
    if os.environ.get("REDIS_URL"):
        app.config["HYBRID_STORE_URL"] = os.environ["REDIS_URL"]
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
