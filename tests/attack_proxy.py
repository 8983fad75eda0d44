"""A man in the middle for tests: the attacker of issue 7, who sits after TLS.

It forwards every request to the real server, so the app executes it, and may then drop the
real answer and send its own: a refusal without a signature, a genuine signed refusal captured
from another request, or an empty 204 in place of the answer. Clients must raise rather than
retry (a retry would make the app execute the request twice) or accept the forgery.

::

    with AttackProxy(live.url) as proxy:
        proxy.mode = "unsigned_refusal"
        HybridSession(proxy.url).post("/api/order", json=order)  # must raise SignatureError
        assert proxy.attacked == 1

Standard library only (``http.server`` and ``http.client``), so the Python, Node and Chromium
tests can all use it. It adds no headers of its own: whatever it sends either came from the
upstream or is the forged answer itself. OPTIONS (CORS preflights) and paths outside
``attack_prefix`` (keys, handshake) always pass.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

__all__ = ["MODES", "AttackProxy"]

MODES = ("pass", "unsigned_refusal", "replayed_refusal", "no_content", "replayed_answer")

#: The refusals an unsigned forgery imitates, byte for byte as the server sends them
#: (docs/PROTOCOL.md, Errors): both make a careless client retry.
_FORGED_REFUSALS = {
    "unknown_key": (
        401,
        b'{"error":"unknown_key","message":'
        b'"The key identifier is not known; fetch the server keys and retry."}',
    ),
    "invalid_session": (
        401,
        b'{"error":"invalid_session","message":'
        b'"The session token is missing, invalid or expired."}',
    ),
}
#: The error table's codes: a 4xx JSON answer naming one of them is a refusal worth capturing.
_ERROR_CODES = frozenset(
    {
        "invalid_payload",
        "invalid_session",
        "unknown_key",
        "replayed_request",
        "payload_too_large",
        "encryption_required",
        "rate_limited",
        "store_unavailable",
    }
)
# Connection-level headers (RFC 9110 §7.6.1): never forwarded, the proxy frames each hop itself.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
    }
)
_TIMEOUT = 30.0
_MAX_CHUNK_LINE = 1024

Headers = list[tuple[str, str]]


def _is_refusal(status: int, body: bytes) -> bool:
    if not 400 <= status < 500:
        return False
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("error") in _ERROR_CODES


def _without(headers: Iterable[tuple[str, str]], names: Iterable[str]) -> Headers:
    dropped = {name.lower() for name in names} | _HOP_BY_HOP
    return [(name, value) for name, value in headers if name.lower() not in dropped]


class AttackProxy:
    """A threaded HTTP/1.1 proxy on 127.0.0.1 (ephemeral port) in front of ``upstream``.

    :param upstream: the real server's origin, e.g. ``"http://127.0.0.1:5000"``.
    :param attack_prefix: only answers to requests whose path starts with it are attacked.

    ``mode`` says what happens to answers under ``attack_prefix`` (OPTIONS excepted):

    - ``"pass"``: relayed as they are; the last genuine refusal relayed (a 4xx with an
      error-table body) is kept for ``"replayed_refusal"``.
    - ``"unsigned_refusal"``: the request is forwarded and its answer dropped; the client gets
      the error-table JSON of ``refusal_code`` (``"unknown_key"`` or ``"invalid_session"``)
      with its status, ``X-Hybrid-Refusal: <code>`` as the server marks its refusals, and no
      signature. Only the real answer's CORS headers (``Access-Control-*``, ``Vary``) are
      kept, so that a browser still reads the forgery.
    - ``"replayed_refusal"``: the request is forwarded and its answer dropped; the client gets
      the captured refusal (status, headers, body as they were).
    - ``"no_content"``: the request is forwarded; the client gets status 204 without a body,
      with the real answer's headers but ``Content-Length`` / ``Content-Type`` (so any
      signature headers are those of the real answer).
    - ``"replayed_answer"``: the request is forwarded and its answer dropped; the client gets
      the last genuine 2xx answer relayed in ``"pass"`` mode under ``attack_prefix``, as it was
      (the answer to an earlier request, e.g. sealed under a CEK the client reuses).

    ``attacked`` counts the answers replaced. Use it as a context manager (or ``start()`` /
    ``close()``).
    """

    def __init__(self, upstream: str, *, attack_prefix: str = "/api/") -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("upstream must be an http:// origin")
        self.upstream = upstream.rstrip("/")
        self._upstream_host = parts.hostname
        self._upstream_port = parts.port or 80
        self.attack_prefix = attack_prefix
        self.mode = "pass"
        self.refusal_code = "unknown_key"
        self.attacked = 0
        self._captured: tuple[int, Headers, bytes] | None = None
        self._last_answer: tuple[int, Headers, bytes] | None = None
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- life cycle ------------------------------------------------------------------------------
    def start(self) -> AttackProxy:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
            )
            self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=_TIMEOUT)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> AttackProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- captured refusal ------------------------------------------------------------------------
    def capture_refusal(
        self, status: int, headers: Mapping[str, str] | Iterable[tuple[str, str]], body: bytes
    ) -> None:
        """Set the refusal that ``"replayed_refusal"`` answers with."""
        items = headers.items() if isinstance(headers, Mapping) else headers
        with self._lock:
            self._captured = (status, [(str(k), str(v)) for k, v in items], bytes(body))

    @property
    def captured(self) -> tuple[int, Headers, bytes] | None:
        """The refusal ``"replayed_refusal"`` would send: (status, headers, body)."""
        with self._lock:
            return self._captured

    # -- one exchange ----------------------------------------------------------------------------
    def _forward(
        self, method: str, target: str, headers: Headers, body: bytes
    ) -> tuple[int, Headers, bytes]:
        """Send the request upstream exactly as received (hop-by-hop headers aside)."""
        connection = http.client.HTTPConnection(
            self._upstream_host, self._upstream_port, timeout=_TIMEOUT
        )
        try:
            connection.putrequest(method, target, skip_host=True, skip_accept_encoding=True)
            for name, value in _without(headers, ("content-length",)):
                connection.putheader(name, value)
            if body or any(name.lower() == "content-length" for name, _ in headers):
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body or None)
            response = connection.getresponse()
            answer = response.read()
            return response.status, list(response.getheaders()), answer
        finally:
            connection.close()

    def _answer(
        self, method: str, target: str, headers: Headers, body: bytes
    ) -> tuple[int, Headers, bytes]:
        status, answer_headers, answer = self._forward(method, target, headers, body)
        path = urlsplit(target).path
        mode = self.mode
        if method == "OPTIONS" or not path.startswith(self.attack_prefix) or mode == "pass":
            if mode == "pass" and _is_refusal(status, answer):
                self.capture_refusal(status, answer_headers, answer)
            elif mode == "pass" and 200 <= status < 300 and path.startswith(self.attack_prefix):
                with self._lock:
                    self._last_answer = (status, list(answer_headers), answer)
            return status, answer_headers, answer
        if mode == "unsigned_refusal":
            if self.refusal_code not in _FORGED_REFUSALS:
                raise RuntimeError(f"refusal_code is one of {sorted(_FORGED_REFUSALS)}")
            forged_status, forged = _FORGED_REFUSALS[self.refusal_code]
            cors = [
                (name, value)
                for name, value in answer_headers
                if name.lower().startswith("access-control-") or name.lower() == "vary"
            ]
            forged_headers = [
                *cors,
                ("Content-Type", "application/json"),
                ("X-Hybrid-Refusal", self.refusal_code),
            ]
            result = (forged_status, forged_headers, forged)
        elif mode == "replayed_refusal":
            captured = self.captured
            if captured is None:
                raise RuntimeError("replayed_refusal: no refusal captured yet")
            result = captured
        elif mode == "no_content":
            result = (204, _without(answer_headers, ("content-length", "content-type")), b"")
        elif mode == "replayed_answer":
            with self._lock:
                last = self._last_answer
            if last is None:
                raise RuntimeError("replayed_answer: no answer relayed yet")
            result = last
        else:
            raise RuntimeError(f"unknown mode {mode!r}; one of {MODES}")
        with self._lock:
            self.attacked += 1
        return result


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = _TIMEOUT  # on the client's socket: a stalled client frees its thread

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline(_MAX_CHUNK_LINE)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(_MAX_CHUNK_LINE).strip():
                        pass  # trailer fields, dropped
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(_MAX_CHUNK_LINE)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        proxy: AttackProxy = self.server.proxy  # type: ignore[attr-defined]
        body = self._read_body()
        try:
            status, headers, answer = proxy._answer(
                self.command, self.path, list(self.headers.items()), body
            )
        except (OSError, http.client.HTTPException, RuntimeError):
            status, headers, answer = 502, [], b""
        # send_response_only: no Server or Date header of the proxy's own.
        self.send_response_only(status)
        if self.command == "HEAD":  # the upstream's Content-Length describes a GET's body
            for name, value in _without(headers, ()):
                self.send_header(name, value)
            self.end_headers()
            return
        for name, value in _without(headers, ("content-length",)):
            self.send_header(name, value)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        if status not in (204, 304):
            self.wfile.write(answer)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet under pytest
