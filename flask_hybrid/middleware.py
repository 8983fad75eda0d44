"""The WSGI middleware: a thin adapter between WSGI and :mod:`flask_hybrid.exchange`.

It moves bytes and nothing else: the request head into a :class:`~.exchange.RequestHead`, the
body from ``wsgi.input`` into the exchange's buffer, the plaintext into the environ the app
sees, and the app's answer through :meth:`~.exchange.Exchanges.finish`. What to decrypt, how to
check it and how to seal or sign the answer is decided in :mod:`flask_hybrid.exchange`.
"""

from __future__ import annotations

import collections
import io
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from . import signals
from .core import signatures
from .errors import (
    HybridError,
    InvalidPayload,
    StoreUnavailable,
    error_body,
    refusal_headers,
)
from .exceptions import as_http_exception
from .exchange import (
    EXPOSED_HEADERS,
    READ_HEADERS,
    REASONS,
    EncryptedRequest,
    Exchange,
    Exchanges,
    HeaderList,
    RequestHead,
    detect,
    expose_headers,
)
from .exchange import bearer_token as bearer_token_of
from .state import HybridState

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = [
    "ANSWERED_KEY",
    "ENVIRON_KEY",
    "EXPOSED_HEADERS",
    "JSON_KEY",
    "REFUSAL_KEY",
    "REFUSAL_RAISED_KEY",
    "EncryptedRequest",
    "HybridMiddleware",
]

logger = logging.getLogger("flask_hybrid")

#: The environ key under which the app finds the :class:`EncryptedRequest` it was sent.
ENVIRON_KEY = "flask_hybrid.request"
#: The plaintext's JSON value, when checking it built one (the blueprint hands it to Flask).
JSON_KEY = "flask_hybrid.json"
#: The refusal (a :class:`~flask_hybrid.errors.HybridError`) of a request refused by the
#: middleware, or by the blueprint inside the app; such an answer is signed.
REFUSAL_KEY = "flask_hybrid.refusal"
#: Set by the blueprint once it has raised the middleware's refusal inside the app.
REFUSAL_RAISED_KEY = "flask_hybrid.refusal_raised"
#: The request as it was sent (method and key headers), which response signatures cover.
ANSWERED_KEY = "flask_hybrid.answered_request"
# One 64 KiB frame of the PyPI client, with its length prefix and tag: servers' input streams
# return a read only once it is full (or the body ends), so a read holds one whole frame.
_WIRE_PIECE = 4 + 64 * 1024 + 16
_ENVIRON_HEADERS = tuple((name, "HTTP_" + name.upper().replace("-", "_")) for name in READ_HEADERS)


def request_target(environ: WSGIEnvironment) -> str:
    """The path and query exactly as the client sent them (what J's ``htu`` names)."""
    raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if raw:
        if "://" in raw.split("?", 1)[0]:  # absolute-form: keep only path and query
            raw = "/" + raw.split("://", 1)[1].partition("/")[2]
        return raw
    path = (environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")).encode("latin-1")
    query = environ.get("QUERY_STRING", "")
    return quote(path, safe="/;=,:@!$&'()*+~-._") + (f"?{query}" if query else "")


def bearer_token(environ: WSGIEnvironment) -> str | None:
    """The token of an ``Authorization: Bearer`` header, if there is one."""
    return bearer_token_of(environ.get("HTTP_AUTHORIZATION", ""))


def request_head(environ: WSGIEnvironment) -> RequestHead:
    """The request head an exchange reads, from a WSGI environ."""
    return RequestHead(
        method=environ.get("REQUEST_METHOD", "GET"),
        target=request_target(environ),
        path=environ.get("PATH_INFO", ""),
        remote_addr=environ.get("REMOTE_ADDR"),
        content_type=environ.get("CONTENT_TYPE", ""),
        content_length=environ.get("CONTENT_LENGTH"),
        streamed_body="chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        or bool(environ.get("wsgi.input_terminated")),
        headers={name: environ[key] for name, key in _ENVIRON_HEADERS if key in environ},
    )


def _fill(body: Any, stream: Any) -> None:
    """Read ``stream`` into an exchange's body buffer (``readinto`` when the stream has it)."""
    readinto = getattr(stream, "readinto", None)
    while not body.done:
        with body.space() as space:
            if readinto is not None:
                count = readinto(space) or 0
            else:
                data = stream.read(len(space))
                count = len(data)
                space[:count] = data
        body.commit(count)


class PlaintextInput(io.RawIOBase):
    """The decrypted body as the app's ``wsgi.input``, read from the plaintext's own buffer
    (``io.BytesIO`` would copy the whole of it first)."""

    def __init__(self, plaintext: bytearray) -> None:
        self._view = memoryview(plaintext)
        self._position = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with memoryview(buffer) as target:
            count = min(len(target), len(self._view) - self._position)
            target[:count] = self._view[self._position : self._position + count]
        self._position += count
        return count

    def read(self, size: int | None = -1) -> bytes:
        start = self._position
        end = len(self._view) if size is None or size < 0 else min(len(self._view), start + size)
        self._position = max(start, end)
        return bytes(self._view[start:end])

    def readall(self) -> bytes:
        return self.read()

    def readline(self, size: int | None = -1) -> bytes:
        start = self._position
        end = len(self._view) if size is None or size < 0 else min(len(self._view), start + size)
        newline = self._view.obj.find(b"\n", start, end)  # type: ignore[attr-defined]
        return self.read((end if newline < 0 else newline + 1) - start)


class HybridMiddleware:
    """Decrypt requests in formats S, E and J and answer each in kind.

    - A request is encrypted when it has ``X-Encryption-Enabled: true``, ``Content-Type:
      application/jose`` or an ``X-Hybrid-JWE`` header; everything else, and every multipart
      body, passes through untouched.
    - The decrypted request reaches the app as an ordinary one: plaintext body, content type and
      ``Content-Length`` rewritten; ``environ["flask_hybrid.request"]`` says how it came.
    - S and J responses are sealed under the request's key whatever the status (but 204 and 304,
      which have no body); E responses are signed, or sealed on ``X-Encrypt-Response: true``.
    - Refusals are the JSON of the error table. With ``refusals_through_app=True`` (what
      :class:`~flask_hybrid.HybridEncryption` sets, for the Flask app whose blueprint raises
      them) a refused request still enters the app, with an empty body, and the app's error
      handlers and ``after_request`` hooks shape the answer; otherwise the middleware answers.
    - Signing (``HYBRID_SIGN_RESPONSES``) happens last, over the bytes and status that leave:
      ``X-Response-Signature`` and a request-bound RFC 9421 signature.

    Security: the client address bound into sessions is ``REMOTE_ADDR``. Behind a proxy, apply
    ``werkzeug.middleware.proxy_fix.ProxyFix`` *outside* this middleware, trusting only your
    own proxies.

    ::

        app.wsgi_app = HybridMiddleware(app.wsgi_app, state)
    """

    def __init__(
        self, app: WSGIApplication, state: HybridState, *, refusals_through_app: bool = False
    ) -> None:
        self.app = app
        self.state = state
        self.refusals_through_app = refusals_through_app
        self.exchanges = Exchanges(state)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        kind = detect(
            environ.get("CONTENT_TYPE", ""),
            environ.get("HTTP_X_ENCRYPTION_ENABLED"),
            environ.get("HTTP_X_HYBRID_JWE"),
            environ.get("HTTP_EHBP_ENCAPSULATED_KEY"),
        )
        if kind is None:
            return self._call_app(environ, start_response, None)
        head = request_head(environ)
        exchange = Exchange(self.exchanges, head, kind)
        environ[ANSWERED_KEY] = head.answered()  # as sent: the app sees the plaintext's headers
        try:
            if exchange.streams:
                encrypted = self._open_stream(environ, exchange)
            else:
                encrypted = self._open(environ, exchange)
        except HybridError as error:
            if exchange.streams and exchange.proved:  # answered sealed, like the app's errors
                return self._refuse_sealed(environ, start_response, error, exchange)
            return self._refuse(environ, start_response, error, exchange.format_name)
        except Exception:  # a bug must not become a 5xx; its traceback goes to the log only
            logger.exception("flask-hybrid: unexpected error while opening a request")
            bug = InvalidPayload("internal_error")
            return self._refuse(environ, start_response, bug, exchange.format_name)
        if encrypted is not None and not self.refusals_through_app:
            signals.request_decrypted.send(  # inside Flask the blueprint sends it
                self, format=encrypted.format, session_id=encrypted.session_id
            )
        if encrypted is not None and exchange.streams:
            return self._call_app_streamed(environ, start_response, exchange)
        return self._call_app(environ, start_response, encrypted)

    # -- request ---------------------------------------------------------------------------
    def _open(self, environ: WSGIEnvironment, exchange: Exchange) -> EncryptedRequest | None:
        """Read the body into the exchange, open it, and give the app the plaintext."""
        body = exchange.body_buffer()
        _fill(body, environ["wsgi.input"])
        opened = exchange.open(body.take())
        if opened is None:
            return None
        environ["wsgi.input"] = PlaintextInput(opened.plaintext)
        environ["CONTENT_LENGTH"] = str(len(opened.plaintext))
        if opened.content_type is None:
            environ.pop("CONTENT_TYPE", None)
        else:
            environ["CONTENT_TYPE"] = opened.content_type
        for key in ("HTTP_TRANSFER_ENCODING", "wsgi.input_terminated", "HTTP_CONTENT_DIGEST"):
            environ.pop(key, None)  # they describe the wire body, not this one
        environ[ENVIRON_KEY] = opened.encrypted
        environ[JSON_KEY] = opened.json
        return opened.encrypted

    def _open_stream(self, environ: WSGIEnvironment, exchange: Exchange) -> EncryptedRequest | None:
        """Format H: read until the first frame has opened (a key the server does not hold is
        refused before the app runs, so the client can refetch and resend), then let the app
        read the rest through a :class:`StreamedPlaintext`."""
        if not exchange.start_stream():
            return None  # bodiless: EHBP passes it as it is
        wire = _WireBody(environ)
        opened: list[bytes] = []
        while not exchange.proved:
            data = wire.read()
            if not data:
                exchange.end_of_body()  # refuses: no frame opened
            opened.extend(exchange.feed(data))
        encrypted = exchange.encrypted
        assert encrypted is not None
        environ["wsgi.input"] = StreamedPlaintext(environ, exchange, wire, opened)
        environ["wsgi.input_terminated"] = True  # its length is known once it has been read
        for key in ("CONTENT_LENGTH", "HTTP_TRANSFER_ENCODING", "HTTP_CONTENT_DIGEST"):
            environ.pop(key, None)
        environ[ENVIRON_KEY] = encrypted
        return encrypted

    # -- refusals --------------------------------------------------------------------------
    def _refuse(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        error: HybridError,
        format_name: str | None,
    ) -> Iterable[bytes]:
        log_refusal(environ, error, format_name)
        environ[REFUSAL_KEY] = error
        _withhold_body(environ)  # no hook or view may read what was refused
        if self.refusals_through_app:
            return self._call_app(environ, start_response, None)
        signals.request_refused.send(self, code=error.error, reason=error.reason)
        return self._answer_refusal(environ, start_response, error)

    def _refuse_sealed(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        error: HybridError,
        exchange: Exchange,
    ) -> Iterable[bytes]:
        """A format H refusal once the key is proved: the answer is sealed to that key (EHBP
        §5.1), whether the app shapes it (through the blueprint) or the middleware does."""
        log_refusal(environ, error, "H")
        environ[REFUSAL_KEY] = error
        environ[ENVIRON_KEY] = exchange.encrypted
        _withhold_body(environ)
        if self.refusals_through_app:
            return self._call_app_streamed(environ, start_response, exchange)
        signals.request_refused.send(self, code=error.error, reason=error.reason)
        return _sealed_refusal(start_response, error, exchange)

    def _answer_refusal(
        self, environ: WSGIEnvironment, start_response: StartResponse, error: HybridError
    ) -> Iterable[bytes]:
        """The middleware's own answer: the error table's bytes, signed per the policy."""
        headers, body = self.exchanges.refusal_answer(_answered(environ), error)
        start_response(f"{error.code} {REASONS[error.code]}", headers)
        return [body]

    # -- response --------------------------------------------------------------------------
    def _call_app(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        encrypted: EncryptedRequest | None,
    ) -> Iterable[bytes]:
        """Run the app; seal and sign its answer when that needs the body, else stream it."""
        written: list[bytes] = []
        captured = _Captured(written.append)  # write(): kept and sent before the iterable
        refused_here: HybridError | None = environ.get(REFUSAL_KEY)
        app_iter = self.app(environ, captured)
        if refused_here is not None and not environ.get(REFUSAL_RAISED_KEY):
            # Refused, yet the app's blueprint hook never raised it: answer here, not the app.
            _close(app_iter)
            logger.error("flask-hybrid: the app did not raise a refusal; is the blueprint on it?")
            return self._answer_refusal(environ, start_response, refused_here)
        if captured.status is None:  # a lazy (generator) app answers only as it is read
            try:
                written.extend(app_iter)
            finally:
                _close(app_iter)
            app_iter = []
        status, headers = captured.answer()
        refusal: HybridError | None = environ.get(REFUSAL_KEY)  # the blueprint's own too
        path = environ.get("PATH_INFO", "")
        if not written and not self.exchanges.must_buffer(path, encrypted, refusal):
            start_response(status, expose_headers(headers))  # plain: stream it as it is
            return app_iter
        try:
            body = b"".join([*written, *app_iter])
        finally:
            _close(app_iter)
        headers, parts = self.exchanges.finish(
            answered=_answered(environ),
            path=path,
            encrypted=encrypted,
            refusal=refusal,
            status_code=int(status.split(" ", 1)[0]),
            headers=headers,
            body=body,
        )
        del body
        start_response(status, headers)
        return parts

    def _call_app_streamed(
        self, environ: WSGIEnvironment, start_response: StartResponse, exchange: Exchange
    ) -> Iterable[bytes]:
        """Format H: the app's answer sealed chunk by chunk as it yields, never held whole."""
        sealed_written: list[bytes] = []
        captured = _Captured(lambda data: sealed_written.append(exchange.seal_chunk(data)))
        try:
            app_iter = self.app(environ, captured)
        except HybridError as error:  # the plaintext stream refused a frame (outside Flask)
            return _sealed_refusal(start_response, error, exchange)
        chunks = iter(app_iter)
        first: list[bytes] = []
        try:
            if captured.status is None:  # a lazy (generator) app answers only as it is read
                first = [next(chunks, b"")]
        except HybridError as error:
            _close(app_iter)
            return _sealed_refusal(start_response, error, exchange)
        status, headers = captured.answer()
        start_response(status, exchange.stream_headers(headers))
        sealed_first = [*sealed_written, *map(exchange.seal_chunk, first)]
        return _SealedStream(exchange, chunks, app_iter, sealed_first)


def _sealed_refusal(
    start_response: StartResponse, error: HybridError, exchange: Exchange
) -> list[bytes]:
    """A format H refusal sealed to the key the first frame proved: the error table's bytes,
    not signed (a signature would describe the plaintext, not the frames that leave)."""
    headers = exchange.stream_headers(list(refusal_headers(error)))
    start_response(f"{error.code} {REASONS[error.code]}", headers)
    return [exchange.seal_chunk(error_body(error))]


class _Captured:
    """The app's ``start_response``, recorded (status and headers) rather than sent, so that
    the answer can be sealed or signed first; ``write`` is what the legacy ``write()`` does."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self.status: str | None = None
        self.headers: HeaderList = []
        self._write = write

    def __call__(
        self, status: str, headers: HeaderList, exc_info: Any = None
    ) -> Callable[[bytes], None]:
        if exc_info is not None and self.status is not None:
            raise exc_info[1].with_traceback(exc_info[2])
        self.status, self.headers = status, headers
        return self._write

    def answer(self) -> tuple[str, HeaderList]:
        if self.status is None:  # a WSGI app must start its answer before it ends
            raise RuntimeError("the app did not call start_response")
        return self.status, self.headers


class _WireBody:
    """Format H's wire body, read a bounded piece at a time (its length, if declared, is not
    read past)."""

    def __init__(self, environ: WSGIEnvironment) -> None:
        self._stream = environ["wsgi.input"]
        declared = environ.get("CONTENT_LENGTH", "").strip(" \t")
        self._remaining: int | None = int(declared) if declared else None

    def read(self) -> bytes:
        size = _WIRE_PIECE if self._remaining is None else min(_WIRE_PIECE, self._remaining)
        if size <= 0:
            return b""
        data: bytes = self._stream.read(size)
        if self._remaining is not None:
            self._remaining -= len(data)
        return data


class StreamedPlaintext(io.RawIOBase):
    """Format H's plaintext as the app reads it: each frame's plaintext only once that frame
    authenticated, so no byte of a tampered frame ever reaches the app.

    A refused frame (or a cut body) is raised to the reader as flask-hybrid's Werkzeug
    exception, which Flask turns into the error table's answer, sealed like any other.
    """

    def __init__(
        self,
        environ: WSGIEnvironment,
        exchange: Exchange,
        wire: _WireBody,
        opened: list[bytes],
    ) -> None:
        self._environ = environ
        self._exchange = exchange
        self._wire = wire
        self._pending = collections.deque(opened)
        self._ended = False
        self._offset = 0  # into the first pending plaintext

    def readable(self) -> bool:
        return True

    def _next_plaintext(self) -> bytes | None:
        """The plaintext not yet read, pulling frames from the wire as needed; None at the end."""
        while not self._pending:
            if self._ended:
                return None
            try:
                data = self._wire.read()
                if data:
                    self._pending.extend(self._exchange.feed(data))
                else:
                    self._ended = True
                    self._exchange.end_of_body()
            except HybridError as error:
                self._ended = True
                self._pending.clear()
                log_refusal(self._environ, error, "H")
                raise as_http_exception(error) from None
        return self._pending[0]

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            return self.readall()
        current = self._next_plaintext()
        if current is None or size == 0:
            return b""
        piece = current[self._offset : self._offset + size]
        self._advance(len(piece), len(current))
        return piece

    def readall(self) -> bytes:
        pieces = []
        while (current := self._next_plaintext()) is not None:
            pieces.append(current[self._offset :] if self._offset else current)
            self._pending.popleft()
            self._offset = 0
        return b"".join(pieces)

    def readinto(self, buffer: Any) -> int:
        with memoryview(buffer) as target:
            piece = self.read(len(target))
            target[: len(piece)] = piece
        return len(piece)

    def _advance(self, count: int, length: int) -> None:
        self._offset += count
        if self._offset >= length:
            self._pending.popleft()
            self._offset = 0


class _SealedStream:
    """The app's answer as sealed frames, one write per chunk the app yields (an event stream
    reaches the client event by event); closes the app's iterable as WSGI asks."""

    def __init__(
        self,
        exchange: Exchange,
        chunks: Iterator[bytes],
        app_iter: Iterable[bytes],
        first: list[bytes],
    ) -> None:
        self._exchange = exchange
        self._chunks = chunks
        self._app_iter = app_iter
        self._first = first

    def __iter__(self) -> Iterator[bytes]:
        for sealed in self._first:
            if sealed:
                yield sealed
        for chunk in self._chunks:
            sealed = self._exchange.seal_chunk(chunk)
            if sealed:
                yield sealed

    def close(self) -> None:
        _close(self._app_iter)


def _answered(environ: WSGIEnvironment) -> signatures.AnsweredRequest:
    """The request as it was sent, recorded before the app saw the plaintext's headers."""
    answered: signatures.AnsweredRequest | None = environ.get(ANSWERED_KEY)
    return answered if answered is not None else request_head(environ).answered()


def log_refusal(environ: WSGIEnvironment, error: HybridError, kind: str | None) -> None:
    """One line per refusal: method, path, format and reason; never a key, token or body."""
    level = logging.WARNING if isinstance(error, StoreUnavailable) else logging.INFO
    logger.log(
        level,
        "flask-hybrid refused %s %s (format %s): %s/%s",
        environ.get("REQUEST_METHOD", "-"),
        environ.get("PATH_INFO", "-"),
        kind or "-",
        error.error,
        error.reason,
    )


def _withhold_body(environ: WSGIEnvironment) -> None:
    environ["wsgi.input"] = io.BytesIO(b"")
    environ["CONTENT_LENGTH"] = "0"
    for key in ("CONTENT_TYPE", "HTTP_TRANSFER_ENCODING", "HTTP_CONTENT_DIGEST"):
        environ.pop(key, None)
    environ.pop("wsgi.input_terminated", None)


def _close(app_iter: Iterable[bytes]) -> None:
    close = getattr(app_iter, "close", None)
    if close is not None:
        close()
