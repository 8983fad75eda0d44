"""What gunicorn serves in the bench: the demo app with the bench's configuration.

The configuration comes as JSON in ``FLASK_HYBRID_BENCH_CONFIG`` (see ``bench/server.py``).
``FLASK_HYBRID_BENCH_POOL_QUIET`` (seconds) replaces the session-key pool with one of that quiet
period, to compare refill policies; no app should do this. ``FLASK_HYBRID_BENCH_STREAMING=1``
adds the two streaming routes of ``bench/streaming.py``: an upload that reads the body a piece
at a time and answers its size and SHA-256, and a download that yields ``size`` bytes a piece
at a time; neither ever holds the body whole.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterator

from flask import Flask, Response, request

import app as demo
from flask_hybrid.keypool import KeyPool

from .streaming import DOWNLOAD_PATH, PIECE, STREAMING_ENV, UPLOAD_PATH, pattern_block
from .workload import FLOOR_PATHS


def add_streaming_routes(flask_app: Flask) -> None:
    """The upload and download routes of the streaming bench (``bench/streaming.py``)."""

    @flask_app.post(UPLOAD_PATH)
    def upload() -> dict[str, object]:
        digest, size = hashlib.sha256(), 0
        while piece := request.stream.read(PIECE):
            digest.update(piece)
            size += len(piece)
        return {"size": size, "sha256": digest.hexdigest()}

    @flask_app.route(DOWNLOAD_PATH, methods=["GET", "POST"])
    def download() -> Response:
        # A POST carries a small sealed body only so that format H seals the answer: EHBP's
        # clients send a bodiless GET without an encapsulated key, and it is answered plain.
        request.get_data()
        size = int(request.args.get("size", "0"))
        block = pattern_block()

        def pieces() -> Iterator[bytes]:
            for start in range(0, size, PIECE):
                yield block[: min(PIECE, size - start)]

        return Response(pieces(), mimetype="application/octet-stream")


def add_floor_routes(flask_app: Flask) -> None:
    """Plain echoes plus the one store call J (a jti record) or S (a session read) makes."""
    sessions = flask_app.extensions["hybrid"].sessions

    @flask_app.post(FLOOR_PATHS["set"])
    def echo_set() -> dict[str, object]:
        sessions.replay_store.add(f"jti:{secrets.token_urlsafe(16)}", b"1", 605)
        return {"received": request.get_json()}

    @flask_app.post(FLOOR_PATHS["get"])
    def echo_get() -> dict[str, object]:
        sessions.store.get("session:00000000-0000-4000-8000-000000000000")
        return {"received": request.get_json()}


config = json.loads(os.environ.get("FLASK_HYBRID_BENCH_CONFIG", "{}"))
app = demo.create_app(config)
add_floor_routes(app)

if os.environ.get(STREAMING_ENV) == "1":
    add_streaming_routes(app)

if "FLASK_HYBRID_BENCH_POOL_QUIET" in os.environ:  # an experiment of the bench only
    _sessions = app.extensions["hybrid"].sessions
    _sessions._key_pool = KeyPool(
        _sessions._key_pool.size,
        quiet_period=float(os.environ["FLASK_HYBRID_BENCH_POOL_QUIET"]),
    )
