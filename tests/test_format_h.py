"""Format H (EHBP) through the real middleware, with the published clients as they are.

tinfoil-ehbp (PyPI) streams 64 KiB frames chunked; the npm ``ehbp`` client sends one frame as
large as the body with a ``Content-Length``. Both talk to the demo app served by a real HTTP
server, with no change; tampered frames are refused with no plaintext of them released, and a
rotated key gets the 422 the clients know, after which a fresh client succeeds.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import ehbp as tinfoil
import pytest
from flask import Flask, Response, request, stream_with_context

from flask_hybrid import get_encrypted_request
from flask_hybrid.core import ehbp, hpke
from flask_hybrid.errors import InvalidPayload, KeyConfigMismatch, PayloadTooLarge, error_body

from .conftest import LiveServer, start_live_server

ROOT = Path(__file__).resolve().parent.parent
MiB = 1024 * 1024


def _pem(key: hpke.HpkePrivateKey) -> str:
    return key.private_pem().decode()


@pytest.fixture
def h_server(make_app: Callable[..., Flask]) -> Iterator[Callable[..., LiveServer]]:
    """The demo app with a streaming echo, a digest of the body and an event stream."""
    servers: list[LiveServer] = []

    def factory(**overrides: Any) -> LiveServer:
        flask_app = make_app(**overrides)
        flask_app.config["seen"] = []

        @flask_app.post("/stream")
        def stream() -> Response:
            def echo() -> Iterator[bytes]:
                while piece := request.stream.read(256 * 1024):
                    yield piece

            return Response(stream_with_context(echo()), content_type="application/octet-stream")

        @flask_app.post("/digest")
        def digest() -> dict[str, Any]:
            seen = hashlib.sha256()
            size = 0
            while piece := request.stream.read(64 * 1024):
                seen.update(piece)
                size += len(piece)
                flask_app.config["seen"].append(len(piece))
            encrypted = get_encrypted_request()
            return {"size": size, "sha256": seen.hexdigest(), "format": encrypted.format}

        @flask_app.get("/download/<int:size>")
        def download(size: int) -> Response:
            block = bytes(range(256)) * 256  # 64 KiB

            def blocks() -> Iterator[bytes]:
                for _ in range(size // len(block)):
                    yield block

            return Response(blocks(), content_type="application/octet-stream")

        @flask_app.get("/events")
        def events() -> Response:
            def tick() -> Iterator[bytes]:
                for number in range(3):
                    yield f"data: {number}\n\n".encode()
                    time.sleep(0.3)

            return Response(tick(), content_type="text/event-stream")

        @flask_app.get("/plain")
        def plain() -> dict[str, Any]:
            return {"encrypted": get_encrypted_request() is not None}

        live = start_live_server(flask_app)
        servers.append(live)
        return live

    yield factory
    for live in servers:
        live.stop()


def test_tinfoil_client_small_json_round_trip(h_server: Callable[..., LiveServer]) -> None:
    live = h_server()
    with tinfoil.Client.discover(live.url) as client:
        response = client.post("/api/echo", json_body={"card": "4111 1111 1111 1111"})
        assert response.status_code == 200
        assert json.loads(response.content) == {"received": {"card": "4111 1111 1111 1111"}}
        assert client.get("/plain").content == b'{"encrypted":false}\n'  # bodiless: as it is


def test_a_streamed_upload_and_download_of_64_mib(h_server: Callable[..., LiveServer]) -> None:
    live = h_server(HYBRID_MAX_BODY=128 * MiB)
    block = bytes(range(256)) * 256
    count = 64 * MiB // len(block)
    expected = hashlib.sha256(block * count).hexdigest()
    with tinfoil.Client.discover(live.url, max_response_bytes=128 * MiB) as client:
        answer = client.post("/digest", body=(block for _ in range(count)))
        assert answer.status_code == 200
        assert json.loads(answer.content) == {"size": 64 * MiB, "sha256": expected, "format": "H"}
        seen = hashlib.sha256()
        chunks = 0
        with client.stream("GET", f"/download/{64 * MiB}") as streamed:
            assert streamed.status_code == 200
            for chunk in streamed.iter_bytes():
                seen.update(chunk)
                chunks += 1
        assert seen.hexdigest() == expected and chunks >= count  # frame by frame


def test_the_npm_client_sends_one_frame_with_a_length(h_server: Callable[..., LiveServer]) -> None:
    live = h_server()
    script = """
    const { createTransport } = await import(process.argv[1]);
    const transport = await createTransport(process.argv[2]);
    const body = JSON.stringify({ note: 'n'.repeat(300000) });
    const r1 = await transport.post(process.argv[2] + '/api/echo', body,
                                    { headers: { 'Content-Type': 'application/json' } });
    const echoed = await r1.json();
    const r2 = await transport.get(process.argv[2] + '/plain');
    console.log(JSON.stringify({ status: r1.status, same: echoed.received.note.length,
                                 nonce: r1.headers.has('ehbp-response-nonce'),
                                 plain: await r2.text() }));
    """
    module = ROOT / "node_modules" / "ehbp" / "dist" / "esm" / "index.js"
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script, str(module), live.url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "status": 200,
        "same": 300000,
        "nonce": True,
        "plain": '{"encrypted":false}\n',
    }


def _post_frames(
    live: LiveServer, path: str, enc_hex: str, frames: list[bytes], pause: float = 0.0
) -> Any:
    def paced() -> Iterator[bytes]:
        for number, frame in enumerate(frames):
            if number:
                time.sleep(pause)  # each frame its own read on the server
            yield frame

    connection = http.client.HTTPConnection("127.0.0.1", live.server.server_port, timeout=30)
    connection.request(
        "POST",
        path,
        body=paced(),
        headers={ehbp.ENCAPSULATED_KEY_HEADER: enc_hex, "Content-Type": "text/plain"},
        encode_chunked=True,
    )
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response, body


def _open_sealed(sealer: ehbp.RequestSealer, nonce: str | None, body: bytes) -> bytes:
    """The plaintext of a sealed answer to ``sealer``'s request, every frame checked."""
    opener = sealer.response_opener(nonce)
    plaintext = b"".join(opener.feed(body))
    opener.finish()
    return plaintext


def _public_key(live: LiveServer) -> bytes:
    state = live.app.extensions["hybrid"]
    return state.keyring.hpke.keys[0].public_bytes


def test_tampered_frames_in_one_read_release_nothing(h_server: Callable[..., LiveServer]) -> None:
    live = h_server()
    sealer = ehbp.RequestSealer(_public_key(live))
    frames = [sealer.seal(b"a" * 1000), bytearray(sealer.seal(b"b" * 1000))]
    frames[1][-1] ^= 1
    response, body = _post_frames(live, "/digest", sealer.enc.hex(), [b"".join(frames)])
    assert response.status == 400 and live.app.config["seen"] == []  # refused before the app
    nonce = response.getheader(ehbp.RESPONSE_NONCE_HEADER)
    plaintext = _open_sealed(sealer, nonce, body)  # sealed: the first frame proved the key
    assert json.loads(plaintext)["error"] == "invalid_payload"


def test_a_tampered_frame_ends_the_request_with_none_of_it_released(
    h_server: Callable[..., LiveServer],
) -> None:
    live = h_server()
    sealer = ehbp.RequestSealer(_public_key(live))
    frames = [sealer.seal(b"a" * 200_000), bytearray(sealer.seal(b"b" * 1000))]  # 4 frames, 1
    frames[1][-1] ^= 1
    response, body = _post_frames(live, "/digest", sealer.enc.hex(), frames, pause=0.3)
    assert 0 < sum(live.app.config["seen"]) <= 200_000  # frames before it; nothing of it
    assert response.status == 400
    # The key was proved by the first frame, so even the refusal is sealed to the client.
    plaintext = _open_sealed(sealer, response.getheader(ehbp.RESPONSE_NONCE_HEADER), body)
    assert json.loads(plaintext)["error"] == "invalid_payload"


def test_a_tampered_first_frame_is_a_key_mismatch_before_the_app_runs(
    h_server: Callable[..., LiveServer],
) -> None:
    live = h_server()
    sealer = ehbp.RequestSealer(_public_key(live))
    first = bytearray(sealer.seal(b"x" * 100))
    first[10] ^= 1
    response, body = _post_frames(live, "/digest", sealer.enc.hex(), [bytes(first)])
    assert response.status == 422 and live.app.config["seen"] == []
    assert response.getheader("Content-Type") == "application/problem+json"
    assert body == error_body(KeyConfigMismatch)
    assert json.loads(body)["type"] == ehbp.KEY_CONFIG_PROBLEM_TYPE


def test_rotation_old_key_still_opens_unknown_key_gets_422_then_a_fresh_client_succeeds(
    h_server: Callable[..., LiveServer],
) -> None:
    old, new = hpke.HpkePrivateKey.generate(), hpke.HpkePrivateKey.generate()
    before = h_server(HYBRID_HPKE_KEYS=[_pem(old)])
    stale = tinfoil.Client.discover(before.url)
    during = h_server(HYBRID_HPKE_KEYS=[_pem(new), _pem(old)])  # new advertised, old opens
    stale_on_during = tinfoil.Client.with_config(
        during.url, hpke.KeyConfig(0, old.public_bytes).encode()
    )
    assert stale_on_during.post("/api/echo", json_body={"a": 1}).status_code == 200
    after = h_server(HYBRID_HPKE_KEYS=[_pem(new)])  # old retired
    stale_on_after = tinfoil.Client.with_config(
        after.url, hpke.KeyConfig(0, old.public_bytes).encode()
    )
    with pytest.raises(tinfoil.KeyConfigMismatchError):
        stale_on_after.post("/api/echo", json_body={"a": 2})
    with tinfoil.Client.discover(after.url) as fresh:  # what the caller does: refetch, resend
        assert fresh.post("/api/echo", json_body={"a": 3}).status_code == 200
    for client in (stale, stale_on_during, stale_on_after):
        client.close()


def test_a_streamed_body_over_the_limit_is_refused_as_it_arrives(
    h_server: Callable[..., LiveServer],
) -> None:
    live = h_server(HYBRID_MAX_BODY=256 * 1024)
    block = b"z" * (64 * 1024)
    with tinfoil.Client.discover(live.url) as client:
        response = client.post("/digest", body=(block for _ in range(100)))  # 6.25 MiB
    assert response.status_code == 413
    assert json.loads(response.content)["error"] == "payload_too_large"
    assert sum(live.app.config["seen"]) <= 256 * 1024  # nothing past the limit reached the app
    context = hpke.setup_sender(_public_key(live), ehbp.REQUEST_INFO)
    one_frame = ehbp.frame(context.seal(b"y" * (300 * 1024)))  # npm's way: one frame for all
    refused, body = _post_frames(live, "/digest", context.enc.hex(), [one_frame])
    assert refused.status == 413 and body == error_body(PayloadTooLarge)


def test_an_event_stream_reaches_the_client_event_by_event(
    h_server: Callable[..., LiveServer],
) -> None:
    live = h_server()
    with tinfoil.Client.discover(live.url) as client:
        arrivals = []
        with client.stream("GET", "/events", body=b"subscribe") as streamed:
            assert streamed.headers["content-type"].startswith("text/event-stream")
            for chunk in streamed.iter_bytes():
                arrivals.append((time.monotonic(), chunk))
    assert [chunk for _, chunk in arrivals] == [f"data: {n}\n\n".encode() for n in range(3)]
    assert arrivals[-1][0] - arrivals[0][0] >= 0.5  # not held back until the end


def test_our_client_streams_against_the_real_app(h_server: Callable[..., LiveServer]) -> None:
    from flask_hybrid.client import HybridSession

    live = h_server()
    with HybridSession(live.url, format="ehbp") as session:
        parts = (bytes([n]) * 40_000 for n in range(5))
        answer = session.post("/stream", data=parts, stream=True)
        assert answer.status_code == 200
        assert b"".join(answer.iter_content(None)) == b"".join(
            bytes([n]) * 40_000 for n in range(5)
        )
        assert session.post("/api/echo", json={"a": 1}).json() == {"received": {"a": 1}}


def test_a_standalone_middleware_seals_its_own_refusal_once_the_key_is_proved(
    make_app: Callable[..., Flask],
) -> None:
    """Around a WSGI app that is not Flask, the middleware answers a refused frame itself,
    sealed to the key the first frame proved (EHBP §5.1), and the app never runs."""
    from werkzeug.test import Client

    from flask_hybrid import HybridMiddleware

    state = make_app().extensions["hybrid"]
    called: list[bool] = []

    def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        called.append(True)
        start_response("200 OK", [])
        return [b"never"]

    sealer = ehbp.RequestSealer(state.keyring.hpke.keys[0].public_bytes)
    frames = bytearray(sealer.seal(b"a" * 100) + sealer.seal(b"b" * 100))
    frames[-1] ^= 1
    response = Client(HybridMiddleware(inner, state)).post(
        "/x", data=bytes(frames), headers={ehbp.ENCAPSULATED_KEY_HEADER: sealer.header_value}
    )
    assert response.status_code == 400 and not called
    assert "Content-Length" not in response.headers and "Signature" not in response.headers
    nonce = response.headers[ehbp.RESPONSE_NONCE_HEADER]
    assert _open_sealed(sealer, nonce, response.get_data()) == error_body(InvalidPayload)


def test_a_frame_refused_while_a_plain_wsgi_app_reads_is_answered_sealed(
    make_app: Callable[..., Flask],
) -> None:
    """The app had started (the first frames opened); a later frame fails as it reads: the
    answer is the error table's 400, sealed to the proved key, never the app's."""
    from werkzeug.test import Client

    from flask_hybrid import HybridMiddleware

    state = make_app().extensions["hybrid"]
    read: list[int] = []

    def inner(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        while piece := environ["wsgi.input"].read(65536):
            read.append(len(piece))
        start_response("200 OK", [])
        return [b"never"]

    sealer = ehbp.RequestSealer(state.keyring.hpke.keys[0].public_bytes)
    body = bytearray(sealer.seal(b"a" * 200_000) + sealer.seal(b"b" * 100))
    body[-1] ^= 1
    response = Client(HybridMiddleware(inner, state)).post(
        "/x", data=bytes(body), headers={ehbp.ENCAPSULATED_KEY_HEADER: sealer.header_value}
    )
    assert response.status_code == 400 and 0 < sum(read) <= 200_000
    nonce = response.headers[ehbp.RESPONSE_NONCE_HEADER]
    assert _open_sealed(sealer, nonce, response.get_data()) == error_body(InvalidPayload)
