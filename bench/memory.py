"""Peak memory of one encrypted request through the whole middleware, as a multiple of its body.

Each case builds a request (ordinary JSON or hostile JSON, in formats S, E and J), then calls
the Flask app's WSGI callable once under ``tracemalloc``: the figure is the peak of traced
memory minus what was traced before the call, divided by the size of the body on the wire. The
requests go to ``POST /`` (a GET-only page, so the app answers 405 without reading the body,
as in the report of issue 7): what is measured is flask-hybrid's share.

    python -m bench.memory [--size MiB] [--case NAME ...] [--record FILE]

The figures of the code before the memory work are in ``bench/memory_before.json`` and are
printed beside today's.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import tempfile
import tracemalloc
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from werkzeug.test import EnvironBuilder

from flask_hybrid.core import aead, formats, jwe, rsa
from flask_hybrid.core.encoding import b64encode, b64url_encode

BEFORE_FILE = Path(__file__).resolve().parent / "memory_before.json"
TARGET = "/"  # GET only: a POST is answered 405 without the app reading the body
MiB = 1024 * 1024


# --- plaintexts -----------------------------------------------------------------------------
def ordinary_json(size: int) -> bytes:
    """An order-like JSON document of about ``size`` bytes."""
    line = (
        '{"id":%d,"sku":"SKU-%06d","name":"Blue widget, large","qty":3,'
        '"price":"19.90","tags":["red","sale"],"gift":false,"note":null}'
    )
    parts, total, number = [], 12, 0
    while total < size:
        part = line % (number, number)
        parts.append(part)
        total += len(part) + 1
        number += 1
    return ('{"lines":[' + ",".join(parts) + "]}").encode()


def _repeat_array(element: bytes, size: int) -> bytes:
    count = max(1, (size - 2) // (len(element) + 1))
    return b"[" + b",".join([element] * count) + b"]"


def empty_objects(size: int) -> bytes:
    """``[{},{},…]``: one dict per three bytes when a tree is built."""
    return _repeat_array(b"{}", size)


def deep_nesting(size: int, depth: int = 400) -> bytes:
    """Many arrays nested ``depth`` deep, side by side."""
    return _repeat_array(b"[" * (depth - 1) + b"]" * (depth - 1), size)


def distinct_members(size: int) -> bytes:
    """One object with as many distinct members as fit."""
    parts, total, number = [], 2, 0
    while total < size:
        part = f'"{number:x}":0'
        parts.append(part)
        total += len(part) + 1
        number += 1
    return ("{" + ",".join(parts) + "}").encode()


def floats(size: int) -> bytes:
    """``[1.5,1.5,…]``: a float object per four bytes when a tree is built."""
    return _repeat_array(b"1.5", size)


def astral_text(size: int) -> bytes:
    """ASCII text with one emoji: decoding it to ``str`` takes four bytes per character."""
    return b'["' + b"a" * (size - 10) + '😀"]'.encode()


def not_json(size: int) -> bytes:
    """Text that is not JSON at all (it must still be refused 400)."""
    return b"x" * size


# --- requests ---------------------------------------------------------------------------------
@dataclass
class Case:
    name: str
    path: str
    headers: dict[str, str]
    body: bytes
    expect_status: int


class Requests:
    """Builds requests for one app: a session for S, the identity key for E and J."""

    def __init__(self, flask_app: Flask) -> None:
        state = flask_app.extensions["hybrid"]
        self.identity = state.keyring.current
        self.identity_public = self.identity.private_key.public_key()
        handshake_cek = aead.new_cek()
        response = flask_app.test_client().post(
            "/hybrid/session", json={"aesKey": b64encode(handshake_cek), "deviceId": "bench"}
        )
        session = json.loads(formats.open_session_response(response.data, handshake_cek))
        self.session_public = rsa.load_public_key(session["publicKey"])
        self.session_headers = {
            "Authorization": f"Bearer {session['token']}",
            "X-Device-Id": "bench",
            "X-Encryption-Enabled": "true",
            "Content-Type": "application/json",
        }

    def s(self, plaintext: bytes) -> tuple[dict[str, str], bytes]:
        cek = aead.new_cek()
        wrapped_key = rsa.wrap_oaep(self.session_public, cek)
        return self.session_headers, formats.seal_session_request(cek, wrapped_key, plaintext)

    def e(self, plaintext: bytes, *, oaep: bool) -> tuple[dict[str, str], bytes]:
        cek = aead.new_cek()
        if oaep:
            alg, wrapped_key = formats.ENVELOPE_ALG_OAEP, rsa.wrap_oaep(self.identity_public, cek)
        else:
            alg = formats.ENVELOPE_ALG_PKCS1
            wrapped_key = self.identity_public.encrypt(b64encode(cek).encode(), rsa.PKCS1V15)
        body = formats.seal_envelope_request(alg, wrapped_key, cek, plaintext)
        headers = {"X-Encryption-Enabled": "true", "Content-Type": "application/json"}
        return headers, body

    def j(self, plaintext: bytes) -> tuple[dict[str, str], bytes]:
        import time

        header = {
            "alg": "RSA-OAEP-256",
            "enc": "A256GCM",
            "kid": self.identity.kid,
            "htm": "POST",
            "htu": TARGET,
            "iat": int(time.time()),
            "jti": b64url_encode(os.urandom(16)),
            "cty": "json",
        }
        token = jwe.encrypt(header, plaintext, aead.new_cek(), public_key=self.identity_public)
        return {"Content-Type": "application/jose"}, token.encode("ascii")


def cases(requests: Requests, size: int) -> dict[str, Callable[[], Case]]:
    """Every case by name; each builds its request only when called (they are large)."""

    def make(name: str, build: Callable[[], tuple[dict[str, str], bytes]], status: int) -> Any:
        def case() -> Case:
            headers, body = build()
            return Case(name, TARGET, headers, body, status)

        return case

    return {
        "S ordinary": make("S ordinary", lambda: requests.s(ordinary_json(size)), 405),
        "E OAEP ordinary": make(
            "E OAEP ordinary", lambda: requests.e(ordinary_json(size), oaep=True), 405
        ),
        "E PKCS#1 ordinary": make(
            "E PKCS#1 ordinary", lambda: requests.e(ordinary_json(size), oaep=False), 405
        ),
        "J ordinary": make("J ordinary", lambda: requests.j(ordinary_json(size)), 405),
        "S [{},…]": make("S [{},…]", lambda: requests.s(empty_objects(size)), 405),
        "E [{},…]": make("E [{},…]", lambda: requests.e(empty_objects(size), oaep=True), 405),
        "J [{},…]": make("J [{},…]", lambda: requests.j(empty_objects(size)), 405),
        "E deep nesting": make(
            "E deep nesting", lambda: requests.e(deep_nesting(size), oaep=True), 405
        ),
        "E distinct members": make(
            "E distinct members", lambda: requests.e(distinct_members(size), oaep=True), 405
        ),
        "E [1.5,…]": make("E [1.5,…]", lambda: requests.e(floats(size), oaep=True), 405),
        "E astral text": make(
            "E astral text", lambda: requests.e(astral_text(size), oaep=True), 405
        ),
        "E not JSON": make("E not JSON", lambda: requests.e(not_json(size), oaep=True), 400),
    }


# --- measurement ------------------------------------------------------------------------------
@dataclass
class Measurement:
    status: int
    body: bytes
    peak: int  # bytes above the traced memory before the call
    wire: int  # the request body's size on the wire

    @property
    def ratio(self) -> float:
        return self.peak / self.wire


def measure(flask_app: Flask, case: Case) -> Measurement:
    """Call the app once for ``case`` under tracemalloc; the body is built before the baseline."""
    environ = EnvironBuilder(
        path=case.path, method="POST", headers=list(case.headers.items()), data=b""
    ).get_environ()
    environ["REMOTE_ADDR"] = "127.0.0.1"  # the address the session was made from
    environ["wsgi.input"] = io.BytesIO(case.body)  # shares the body's buffer: no copy
    environ["CONTENT_LENGTH"] = str(len(case.body))
    captured: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[..., Any]:
        captured.append(status)
        return lambda data: None

    gc.collect()
    started_here = not tracemalloc.is_tracing()
    if started_here:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        baseline = tracemalloc.get_traced_memory()[0]
        app_iter: Iterable[bytes] = flask_app(environ, start_response)
        try:
            body = b"".join(app_iter)
        finally:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()
        peak = tracemalloc.get_traced_memory()[1] - baseline
    finally:
        if started_here:
            tracemalloc.stop()
    return Measurement(int(captured[0].split()[0]), body, peak, len(case.body))


def bench_app(max_body: int) -> Flask:
    """The demo app with keys made for this run and a body limit that fits the cases."""
    import app as demo

    flask_app = demo.create_app(
        {
            "HYBRID_STORE_URL": "memory://",
            "HYBRID_HANDSHAKE_LIMIT": "1000000 per minute",
            "HYBRID_KEY_POOL_SIZE": 0,
            "HYBRID_MAX_BODY": max_body,
        }
    )
    flask_app.instance_path = tempfile.mkdtemp(prefix="flask-hybrid-bench-")
    return flask_app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=10.0, help="plaintext size in MiB")
    parser.add_argument("--case", action="append", help="run only this case (repeatable)")
    parser.add_argument("--record", type=Path, help="write the figures to this JSON file")
    arguments = parser.parse_args()
    size = int(arguments.size * MiB)

    flask_app = bench_app(max_body=2 * size + MiB)
    builders = cases(Requests(flask_app), size)
    before = json.loads(BEFORE_FILE.read_text()) if BEFORE_FILE.exists() else {}
    recorded: dict[str, Any] = {}
    print(f"plaintext {arguments.size:g} MiB; peak growth / wire body (before → now)")
    for name in arguments.case or builders:
        case = builders[name]()
        result = measure(flask_app, case)
        ok = "" if result.status == case.expect_status else "  UNEXPECTED STATUS"
        del case
        recorded[name] = {
            "status": result.status,
            "wire_bytes": result.wire,
            "peak_bytes": result.peak,
            "ratio": round(result.ratio, 2),
        }
        was = before.get(name, {}).get("ratio")
        was_text = f"{was:6.2f} →" if was is not None else "     n/a "
        print(
            f"{name:<20} {result.status}  wire {result.wire / MiB:6.2f} MiB  "
            f"peak {result.peak / MiB:8.2f} MiB  ratio {was_text} {result.ratio:5.2f}{ok}"
        )
    if arguments.record:
        arguments.record.write_text(json.dumps(recorded, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
