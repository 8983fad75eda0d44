"""Format H over real HTTP: the core pieces behind a ten-line WSGI adapter, and real clients.

The adapter is what the middleware will do in its streaming form (read ``wsgi.input`` in
pieces, feed the opener, seal the app's chunks); it lets tinfoil-ehbp's ``Client``, the npm
``ehbp`` transport (Node) and our ``HybridSession(format="ehbp")`` talk to the core through a
real socket, chunked request bodies and chunked answers included.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import ehbp as tinfoil
import pytest
from werkzeug.serving import make_server
from werkzeug.wsgi import get_input_stream

from flask_hybrid.client import HybridSession, KeyConfigMismatchError, ResponseError
from flask_hybrid.core import ehbp, hpke
from flask_hybrid.errors import HybridError, error_body, refusal_headers

ROOT = Path(__file__).resolve().parent.parent
MAX_BODY = 4 * 1024 * 1024


class EhbpEcho:
    """A WSGI app that opens format H requests with the core and echoes them sealed."""

    def __init__(self, keys: list[hpke.HpkePrivateKey]) -> None:
        self.keys = keys
        self.seen: list[dict[str, Any]] = []
        self.strip_nonce = False  # a proxy that swaps the sealed body for plaintext

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ["PATH_INFO"] == ehbp.KEYS_PATH:
            config = hpke.KeyConfig(0, self.keys[0].public_bytes).encode()
            start_response("200 OK", [("Content-Type", ehbp.KEYS_MEDIA_TYPE)])
            return [config]
        header = environ.get("HTTP_EHBP_ENCAPSULATED_KEY")
        stream = get_input_stream(environ, max_content_length=MAX_BODY + 1024 * 1024)
        if header is None:
            body = stream.read()
            self.seen.append({"sealed": False, "method": environ["REQUEST_METHOD"], "body": body})
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"plain:" + body]
        try:
            opener = ehbp.RequestOpener(self.keys, header, max_body=MAX_BODY)
            pieces: list[bytes] = []
            while data := stream.read(16 * 1024):
                pieces += opener.feed(data)
            opener.finish()
        except HybridError as error:
            start_response(f"{error.code} Refused", refusal_headers(error))
            return [error_body(error)]
        self.seen.append(
            {
                "sealed": True,
                "key_index": opener.key_index,
                "frames": len(pieces),
                "body": b"".join(pieces),
            }
        )
        sealer = opener.response_sealer()
        if self.strip_nonce:
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"swapped by a proxy"]
        start_response(
            "200 OK",
            [(ehbp.RESPONSE_NONCE_HEADER, sealer.nonce_header), ("Content-Type", "text/plain")],
        )
        return (sealer.seal(part) for part in [b"echo:", *pieces])


@pytest.fixture
def server() -> Iterator[tuple[str, EhbpEcho]]:
    app = EhbpEcho([hpke.HpkePrivateKey.generate()])
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", app
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def test_tinfoil_client_over_http(server: tuple[str, EhbpEcho]) -> None:
    url, app = server
    with tinfoil.Client.discover(url) as client:
        response = client.post("/echo", body=b"x" * 200_000)
        assert response.status_code == 200 and response.content == b"echo:" + b"x" * 200_000
        assert app.seen[-1]["frames"] == 4  # 64 KiB frames, chunked
        assert client.get("/plain").content == b"plain:"  # bodiless: no EHBP at all
        assert app.seen[-1]["sealed"] is False


def test_tinfoil_client_gets_422_after_rotation(server: tuple[str, EhbpEcho]) -> None:
    url, app = server
    client = tinfoil.Client.discover(url)
    app.keys[:] = [hpke.HpkePrivateKey.generate()]  # the old key dropped entirely
    with pytest.raises(tinfoil.KeyConfigMismatchError):
        client.post("/echo", body=b"stale")
    client.close()
    with tinfoil.Client.discover(url) as fresh:  # what the caller does: refetch and resend
        assert fresh.post("/echo", body=b"fresh").content == b"echo:fresh"


def test_hybrid_session_streams_both_ways(server: tuple[str, EhbpEcho]) -> None:
    url, app = server
    with HybridSession(url, format="ehbp") as session:
        parts = (bytes([n]) * 40_000 for n in range(5))  # a generator: sent as it is read
        response = session.post("/echo", data=parts, stream=True)
        assert response.status_code == 200
        assert ehbp.RESPONSE_NONCE_HEADER in response.headers
        frames = list(response.iter_content(None))
        assert frames[0] == b"echo:" and b"".join(frames[1:]) == app.seen[-1]["body"]
        assert len(app.seen[-1]["body"]) == 200_000 and app.seen[-1]["frames"] == 4
        assert session.post("/echo", json={"a": 1}).content == b'echo:{"a":1}'
        assert session.get("/plain").content == b"plain:"


def test_hybrid_session_retries_once_after_rotation(server: tuple[str, EhbpEcho]) -> None:
    url, app = server
    with HybridSession(url, format="ehbp") as session:
        assert session.post("/echo", data=b"one").content == b"echo:one"
        app.keys[:] = [hpke.HpkePrivateKey.generate()]
        assert session.post("/echo", data=b"two").content == b"echo:two"  # refetched, resent
        app.keys[:] = [hpke.HpkePrivateKey.generate()]
        with pytest.raises(KeyConfigMismatchError):  # a streamed body cannot be sent again
            session.post("/echo", data=iter([b"three"]))
        assert session.post("/echo", data=iter([b"four"])).content == b"echo:four"


def test_hybrid_session_refuses_an_unsealed_2xx(server: tuple[str, EhbpEcho]) -> None:
    url, app = server
    with HybridSession(url, format="ehbp") as session:
        session.post("/echo", data=b"warm up")
        app.strip_nonce = True
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


def test_npm_client_over_http(server: tuple[str, EhbpEcho]) -> None:
    url, app = server
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
    sealed = [seen for seen in app.seen if seen["sealed"]]
    assert sealed[-1]["frames"] == 1  # npm seals the whole body as one frame
