"""Format H clients over real HTTP against the real middleware: the demo app with an echo.

tinfoil-ehbp's ``Client``, the npm ``ehbp`` transport (Node) and our
``HybridSession(format="ehbp")`` talk to the demo app through a socket, chunked request bodies
and chunked answers included. A WSGI layer in front of the app stands for a proxy after TLS:
it counts the frames each request carried (from their length prefixes, as they pass) and, when
told to, swaps a sealed answer for plaintext.
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import ehbp as tinfoil
import pytest
from flask import Flask, Response, request

from flask_hybrid import get_encrypted_request
from flask_hybrid.client import HybridSession, KeyConfigMismatchError, ResponseError
from flask_hybrid.core import ehbp, hpke
from flask_hybrid.core.keyring import KeyRing

from .conftest import LiveServer, start_live_server

ROOT = Path(__file__).resolve().parent.parent


def _frames(wire: bytes) -> int:
    """How many non-empty frames a format H body holds (length prefixes, big-endian)."""
    count, offset = 0, 0
    while offset + 4 <= len(wire):
        (length,) = struct.unpack_from(">I", wire, offset)
        offset += 4 + length
        count += length > 0
    return count


class Proxy:
    """What sits after TLS: it sees every body, and may swap an answer."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.wsgi_app = app.wsgi_app
        self.seen: list[dict[str, Any]] = []  # per request: sealed?, frames, what the app read
        self.strip_nonce = False  # swap the sealed answer for plaintext
        self.tamper_request = False  # flip a byte of the request body's last frame
        self.tamper_answer = False  # flip a byte of the sealed answer's first frame

    def rotate(self) -> None:
        """A new current HPKE key, the old one dropped entirely."""
        state = self.app.extensions["hybrid"]
        state.keyring = KeyRing(
            [key.private_key for key in state.keyring], hpke_keys=[hpke.HpkePrivateKey.generate()]
        )

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        sealed = "HTTP_EHBP_ENCAPSULATED_KEY" in environ
        length = environ.get("CONTENT_LENGTH")  # else chunked: the server's stream ends
        stream = environ["wsgi.input"]
        wire = (stream.read(int(length)) if length else stream.read()) if sealed else b""
        if sealed and self.tamper_request:
            wire = wire[:-1] + bytes([wire[-1] ^ 1])
        if sealed:
            environ["wsgi.input"] = io.BytesIO(wire)
            environ["CONTENT_LENGTH"] = str(len(wire))
            environ.pop("HTTP_TRANSFER_ENCODING", None)
        self.seen.append({"sealed": sealed, "frames": _frames(wire)})
        if self.tamper_answer:
            answer = b"".join(self.wsgi_app(environ, start_response))
            return [answer[:10] + bytes([answer[10] ^ 1]) + answer[11:]]
        if not self.strip_nonce:
            return self.wsgi_app(environ, start_response)
        for _ in self.wsgi_app(environ, lambda status, headers, exc_info=None: None):
            pass
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"swapped by a proxy"]


@pytest.fixture
def server(make_app: Callable[..., Flask]) -> Iterator[tuple[str, Proxy]]:
    """The demo app with ``POST /echo`` (``echo:`` and the body, streamed back) and
    ``GET /plain`` (how it arrived), behind a :class:`Proxy`."""
    flask_app = make_app(HYBRID_MAX_BODY=80 * 1024 * 1024)

    @flask_app.post("/echo", endpoint="stream_echo")
    def stream_echo() -> Response:
        body = request.stream.read()
        flask_app.config["last_body"] = body

        def pieces() -> Iterator[bytes]:
            yield b"echo:"
            for start in range(0, len(body), 65536):
                yield body[start : start + 65536]

        return Response(pieces(), content_type="text/plain")

    @flask_app.get("/plain", endpoint="how_it_came")
    def how_it_came() -> Response:
        encrypted = get_encrypted_request() is not None
        return Response(f"plain:{'sealed' if encrypted else ''}", content_type="text/plain")

    proxy = Proxy(flask_app)
    flask_app.wsgi_app = proxy  # type: ignore[method-assign]
    live: LiveServer = start_live_server(flask_app)
    try:
        yield live.url, proxy
    finally:
        live.stop()


def test_tinfoil_client_over_http(server: tuple[str, Proxy]) -> None:
    url, proxy = server
    with tinfoil.Client.discover(url) as client:
        response = client.post("/echo", body=b"x" * 200_000)
        assert response.status_code == 200 and response.content == b"echo:" + b"x" * 200_000
        assert proxy.seen[-1]["frames"] == 4  # 64 KiB frames, chunked
        assert client.get("/plain").content == b"plain:"  # bodiless: no EHBP at all
        assert proxy.seen[-1]["sealed"] is False


def test_tinfoil_client_gets_422_after_rotation(server: tuple[str, Proxy]) -> None:
    url, proxy = server
    client = tinfoil.Client.discover(url)
    proxy.rotate()
    with pytest.raises(tinfoil.KeyConfigMismatchError):
        client.post("/echo", body=b"stale")
    client.close()
    with tinfoil.Client.discover(url) as fresh:  # what the caller does: refetch and resend
        assert fresh.post("/echo", body=b"fresh").content == b"echo:fresh"


def test_hybrid_session_streams_both_ways(server: tuple[str, Proxy]) -> None:
    url, proxy = server
    with HybridSession(url, format="ehbp") as session:
        parts = (bytes([n]) * 40_000 for n in range(5))  # a generator: sent as it is read
        response = session.post("/echo", data=parts, stream=True)
        assert response.status_code == 200
        assert ehbp.RESPONSE_NONCE_HEADER in response.headers
        frames = list(response.iter_content(None))
        sent = b"".join(bytes([n]) * 40_000 for n in range(5))
        assert frames[0] == b"echo:" and b"".join(frames[1:]) == sent
        assert len(frames) == 5  # "echo:" and 4 frames of 64 KiB at most, one per yield
        assert proxy.seen[-1]["frames"] == 4
        assert session.post("/echo", json={"a": 1}).content == b'echo:{"a":1}'
        assert session.get("/plain").content == b"plain:"


def test_hybrid_session_retries_once_after_rotation(server: tuple[str, Proxy]) -> None:
    url, proxy = server
    with HybridSession(url, format="ehbp") as session:
        assert session.post("/echo", data=b"one").content == b"echo:one"
        proxy.rotate()
        assert session.post("/echo", data=b"two").content == b"echo:two"  # refetched, resent
        proxy.rotate()
        with pytest.raises(KeyConfigMismatchError):  # a streamed body cannot be sent again
            session.post("/echo", data=iter([b"three"]))
        assert session.post("/echo", data=iter([b"four"])).content == b"echo:four"


def test_hybrid_session_refuses_an_unsealed_2xx(server: tuple[str, Proxy]) -> None:
    url, proxy = server
    with HybridSession(url, format="ehbp") as session:
        session.post("/echo", data=b"warm up")
        proxy.strip_nonce = True
        with pytest.raises(ResponseError):
            session.post("/echo", data=b"swapped")


NODE_CLIENT = """
const { createTransport } = await import(process.argv[1]);
const transport = await createTransport(process.argv[2]);
const big = 'n'.repeat(300000);
const headers = { 'Content-Type': 'text/plain' };
const r1 = await transport.post(process.argv[2] + '/echo', big, { headers });
const t1 = await r1.text();
const r2 = await transport.get(process.argv[2] + '/plain');
const t2 = await r2.text();
console.log(JSON.stringify({ s1: r1.status, ok1: t1 === 'echo:' + big, t2 }));
"""


def test_npm_client_over_http(server: tuple[str, Proxy]) -> None:
    url, proxy = server
    module = ROOT / "node_modules" / "ehbp" / "dist" / "esm" / "index.js"
    result = subprocess.run(
        ["node", "--input-type=module", "-e", NODE_CLIENT, str(module), url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"s1": 200, "ok1": True, "t2": "plain:"}
    sealed = [seen for seen in proxy.seen if seen["sealed"]]
    assert sealed[-1]["frames"] == 1  # npm seals the whole body as one frame


NODE_LARGE_AND_HOSTILE = """
const { createTransport, KeyConfigMismatchError } = await import(process.argv[1]);
const base = process.argv[2];
const control = (what) => fetch(base + '/__proxy/' + what, { method: 'POST' });
const outcome = async (call) => {
  try { const r = await call(); const t = await r.text(); return [r.status, t.length]; }
  catch (error) { return [error.constructor.name]; }
};
let transport = await createTransport(base);
const big = 'b'.repeat(64 * 1024 * 1024);
const r1 = await transport.post(base + '/echo', big, { headers: { 'Content-Type': 'text/plain' } });
const reader = r1.body.getReader();
let read = 0, pieces = 0;
for (;;) {
  const { done, value } = await reader.read();
  if (done) break;
  read += value.length;
  pieces++;
}
await control('tamper_request');
const tamperedRequest = await outcome(() => transport.post(base + '/echo', 'x'.repeat(1000)));
await control('tamper_answer');
const tamperedAnswer = await outcome(() => transport.post(base + '/echo', 'y'.repeat(1000)));
await control('rotate');
const stale = await outcome(() => transport.post(base + '/echo', 'z'));
transport = await createTransport(base);  // what the caller does after the 422: refetch
const fresh = await transport.post(base + '/echo', 'z');
console.log(JSON.stringify({ status: r1.status, read, pieces: pieces > 1, tamperedRequest,
                             tamperedAnswer, stale, fresh: await fresh.text(),
                             mismatch: stale[0] === KeyConfigMismatchError.name }));
"""


def test_npm_client_large_tampered_and_rotated(server: tuple[str, Proxy]) -> None:
    """npm ``ehbp``: 64 MiB up as its one frame and 64 MiB back read as a stream; a tampered
    request (its one frame is the first: 422, as for a key the server does not hold) and a
    tampered answer are refused; after a rotation, the 422 and a refetched client succeed."""
    url, proxy = server
    module = ROOT / "node_modules" / "ehbp" / "dist" / "esm" / "index.js"
    app = proxy.app

    @app.post("/__proxy/<what>", endpoint="proxy_control")
    def proxy_control(what: str) -> str:
        proxy.tamper_request = proxy.tamper_answer = False
        if what == "rotate":
            proxy.rotate()
        else:
            setattr(proxy, what, True)
        return "ok"

    result = subprocess.run(
        ["node", "--input-type=module", "-e", NODE_LARGE_AND_HOSTILE, str(module), url],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert outcome["status"] == 200 and outcome["read"] == len("echo:") + 64 * 1024 * 1024
    assert outcome["pieces"]  # the answer came as a stream of frames
    assert outcome["tamperedRequest"] == ["KeyConfigMismatchError"]
    assert outcome["tamperedAnswer"][0] in ("DecryptionError", "ProtocolError", "EhbpError")
    assert outcome["stale"] == ["KeyConfigMismatchError"] and outcome["mismatch"]
    assert outcome["fresh"] == "echo:z"
    assert max(seen["frames"] for seen in proxy.seen) == 1  # npm: one frame, whatever the size


def test_tinfoil_client_with_tampered_frames(server: tuple[str, Proxy]) -> None:
    """tinfoil-ehbp: a tampered last request frame is the error table's 400, sealed to the
    client (its first frames proved the key); a tampered answer is refused by the client."""
    url, proxy = server
    with tinfoil.Client.discover(url) as client:
        proxy.tamper_request = True
        refused = client.post("/echo", body=(b"t" * 65536 for _ in range(3)))
        assert refused.status_code == 400
        assert json.loads(refused.content)["error"] == "invalid_payload"
        proxy.tamper_request, proxy.tamper_answer = False, True
        with pytest.raises(tinfoil.EHBPError):
            client.post("/echo", body=b"answer me")
