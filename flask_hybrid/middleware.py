"""The WSGI middleware: decrypt encrypted requests, seal or sign the responses.

Data flows one way: environ → detect → read (capped) → parse → unwrap → open → the app, with an
ordinary environ → seal / sign → response.
"""

from __future__ import annotations

import hashlib
import io
import logging
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from werkzeug.datastructures import Headers

from .core import formats, jwe
from .core.encoding import b64encode, loads_json_object
from .core.rsa import PrivateKey, sign, unwrap_oaep
from .errors import (
    HybridError,
    InvalidPayload,
    InvalidSession,
    PayloadTooLarge,
    ReplayedRequest,
    UnknownKey,
    error_body,
)
from .sessions import LiveSession, looks_like_session_id
from .state import HybridState

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger("flask_hybrid")

#: The environ key under which the app finds the :class:`EncryptedRequest` it was sent.
ENVIRON_KEY = "flask_hybrid.request"
_READ_CHUNK = 64 * 1024
_NO_BODY_STATUSES = frozenset({204, 304})


@dataclass(frozen=True)
class EncryptedRequest:
    """How a request arrived, for the response and for views that want to know."""

    format: str  # "S", "E" or "J"
    cek: bytes = field(repr=False)
    seal_response: bool
    session_id: str | None = None
    request_jti: str | None = None


class _UnwrapCache:
    """CEKs by a hash of (key scope, wrapped key): a client reusing one CEK skips the RSA work."""

    def __init__(self, capacity: int = 1024) -> None:
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def unwrap(self, scope: str, key: PrivateKey, wrapped_key: bytes) -> bytes:
        digest = hashlib.sha256(scope.encode() + b"\0" + wrapped_key).digest()
        with self._lock:
            cek = self._entries.get(digest)
            if cek is not None:
                self._entries.move_to_end(digest)
                return cek
        cek = unwrap_oaep(key, wrapped_key)
        with self._lock:
            self._entries[digest] = cek
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return cek


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
    scheme, _, token = environ.get("HTTP_AUTHORIZATION", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _detect(environ: WSGIEnvironment) -> str | None:
    """``"J"``, ``"SE"`` (told apart later by the body) or ``None`` for a plain request."""
    content_type = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
    if content_type.startswith("multipart/"):
        return None
    if content_type == "application/jose" or environ.get("HTTP_X_HYBRID_JWE"):
        return "J"
    if environ.get("HTTP_X_ENCRYPTION_ENABLED", "").strip().lower() == "true":
        return "SE"
    return None


def _read_body(environ: WSGIEnvironment, limit: int) -> bytes:
    """The whole body, refusing (413) before reading more than ``limit`` bytes."""
    stream = environ["wsgi.input"]
    declared = environ.get("CONTENT_LENGTH", "").strip()
    if declared:
        if not declared.isdigit():
            raise InvalidPayload
        length = int(declared)
        if length > limit:
            raise PayloadTooLarge
        chunks, remaining = [], length
        while remaining > 0:
            chunk = stream.read(min(remaining, _READ_CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if not (chunked or environ.get("wsgi.input_terminated")):
        return b""  # no length and no terminated stream: WSGI says there is no body
    chunks, total = [], 0
    while chunk := stream.read(_READ_CHUNK):
        total += len(chunk)
        if total > limit:
            raise PayloadTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


class HybridMiddleware:
    """Decrypt requests in formats S, E and J and answer each in kind.

    - A request is encrypted when it has ``X-Encryption-Enabled: true``, ``Content-Type:
      application/jose`` or an ``X-Hybrid-JWE`` header; everything else, and every multipart
      body, passes through untouched.
    - The decrypted request reaches the app as an ordinary one: plaintext body, content type and
      ``Content-Length`` rewritten; ``environ["flask_hybrid.request"]`` says how it came.
    - S and J responses are sealed under the request's key whatever the status (but 204 and 304,
      which have no body); E responses are signed, or sealed on ``X-Encrypt-Response: true``.
    - Refusals are the JSON of the error table, signed per ``HYBRID_SIGN_RESPONSES``.

    Security: the client address bound into sessions is ``REMOTE_ADDR``. Behind a proxy, apply
    ``werkzeug.middleware.proxy_fix.ProxyFix`` *outside* this middleware, trusting only your
    own proxies.

    ::

        app.wsgi_app = HybridMiddleware(app.wsgi_app, state)
    """

    def __init__(self, app: WSGIApplication, state: HybridState) -> None:
        self.app = app
        self.state = state
        self._unwrap_cache = _UnwrapCache()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        settings = self.state.settings
        policy = settings.sign_responses
        # Every response under "all"; handshake answers under "unsealed" (sealed ones too).
        sign_all = policy == "all" or (
            policy == "unsealed" and environ.get("PATH_INFO") == settings.handshake_path
        )
        kind = _detect(environ)
        encrypted = None
        if kind is not None:
            try:
                encrypted = self._open(environ, kind)
            except HybridError as error:
                logger.info("flask-hybrid refused a request: %s", error.error)
                return self._refuse(error, start_response, sign_it=policy != "none")
            except Exception as error:  # a bug must not become a 5xx or leak through a trace
                logger.error("flask-hybrid failed on a request: %s", type(error).__name__)
                return self._refuse(InvalidPayload(), start_response, sign_it=policy != "none")
        if encrypted is None and not sign_all:  # a plain request: nothing to do
            return self.app(environ, start_response)
        return self._respond(environ, start_response, encrypted, sign_all=sign_all)

    # -- request ---------------------------------------------------------------------------
    def _open(self, environ: WSGIEnvironment, kind: str) -> EncryptedRequest | None:
        body = _read_body(environ, self.state.settings.max_body)
        if kind == "J":
            encrypted, plaintext, content_type = self._open_jwe(environ, body)
        elif body:
            encrypted, plaintext = self._open_json_envelope(environ, loads_json_object(body))
            content_type = formats.REQUEST_JSON_CONTENT_TYPE
        elif "HTTP_X_ENCRYPTED_AES_KEY" in environ:
            encrypted, plaintext, content_type = self._open_session_header(environ), b"", None
        else:
            return None
        environ["wsgi.input"] = io.BytesIO(plaintext)
        environ["CONTENT_LENGTH"] = str(len(plaintext))
        if content_type is None:
            environ.pop("CONTENT_TYPE", None)
        else:
            environ["CONTENT_TYPE"] = content_type
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        environ.pop("wsgi.input_terminated", None)
        environ[ENVIRON_KEY] = encrypted
        return encrypted

    def _require_format(self, name: str) -> None:
        if name not in self.state.settings.formats:
            raise InvalidPayload

    def _live_session(self, environ: WSGIEnvironment) -> LiveSession:
        return self.state.sessions.verify(
            bearer_token(environ), environ.get("HTTP_X_DEVICE_ID"), environ.get("REMOTE_ADDR")
        )

    def _open_json_envelope(
        self, environ: WSGIEnvironment, body: dict[str, Any]
    ) -> tuple[EncryptedRequest, bytes]:
        if "encryptedAesKey" in body:
            self._require_format("S")
            envelope = formats.parse_session_envelope(body)
            session = self._live_session(environ)
            cek = self._unwrap_cache.unwrap(
                session.session_id, session.private_key, envelope.wrapped_key
            )
            plaintext = formats.open_session_envelope(envelope, cek)
            return EncryptedRequest("S", cek, True, session_id=session.session_id), plaintext
        if "ek" in body:
            self._require_format("E")
            envelope_e = formats.parse_envelope(body)
            cek, plaintext = formats.open_envelope(envelope_e, self.state.keyring)
            seal = environ.get("HTTP_X_ENCRYPT_RESPONSE", "").strip().lower() == "true"
            return EncryptedRequest("E", cek, seal), plaintext
        raise InvalidPayload

    def _open_session_header(self, environ: WSGIEnvironment) -> EncryptedRequest:
        self._require_format("S")
        wrapped_key = formats.parse_wrapped_key_header(environ["HTTP_X_ENCRYPTED_AES_KEY"])
        session = self._live_session(environ)
        cek = self._unwrap_cache.unwrap(session.session_id, session.private_key, wrapped_key)
        return EncryptedRequest("S", cek, True, session_id=session.session_id)

    def _open_jwe(
        self, environ: WSGIEnvironment, body: bytes
    ) -> tuple[EncryptedRequest, bytes, str | None]:
        self._require_format("J")
        content_type = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        in_header = content_type != "application/jose"
        if in_header and body:
            raise InvalidPayload  # the header form is for bodiless requests only
        try:
            text = environ["HTTP_X_HYBRID_JWE"] if in_header else body.decode("ascii")
        except UnicodeDecodeError:
            raise InvalidPayload from None
        token = jwe.parse_compact(text.strip())
        binding = formats.read_request_binding(token.header)
        scope, private_key, session_id = self._resolve_kid(environ, binding.kid)
        cek = self._unwrap_cache.unwrap(scope, private_key, token.encrypted_key)
        plaintext = formats.open_request(token, cek, allow_empty=in_header)
        window = self.state.settings.replay_window
        formats.check_request_binding(
            binding,
            method=environ.get("REQUEST_METHOD", "GET").upper(),
            target=request_target(environ),
            now=self.state.clock(),
            window=window,
        )
        if not self.state.sessions.record_request_id(binding.jti, 2 * window):
            raise ReplayedRequest
        encrypted = EncryptedRequest("J", cek, True, session_id, binding.jti)
        return encrypted, plaintext, (None if in_header else binding.content_type)

    def _resolve_kid(
        self, environ: WSGIEnvironment, kid: str
    ) -> tuple[str, PrivateKey, str | None]:
        """An identity key, or a session's key when the kid is that session's id (401s)."""
        identity_key = self.state.keyring.get(kid)
        if identity_key is not None:
            return kid, identity_key.private_key, None
        if bearer_token(environ) is not None:
            session = self._live_session(environ)
            if session.session_id != kid:
                raise InvalidSession
            return kid, session.private_key, kid
        if looks_like_session_id(kid) and self.state.sessions.exists(kid):
            raise InvalidSession  # a session kid without its token
        raise UnknownKey

    # -- response --------------------------------------------------------------------------
    def _respond(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        encrypted: EncryptedRequest | None,
        *,
        sign_all: bool,
    ) -> Iterable[bytes]:
        captured: dict[str, Any] = {}
        chunks: list[bytes] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if exc_info is not None and captured:
                raise exc_info[1].with_traceback(exc_info[2])
            captured["status"], captured["headers"] = status, headers
            return chunks.append

        app_iter = self.app(environ, capture)
        try:
            chunks.extend(app_iter)
        finally:
            close = getattr(app_iter, "close", None)
            if close is not None:
                close()
        status: str = captured["status"]
        headers = Headers(captured["headers"])
        body = b"".join(chunks)
        status_code = int(status.split(" ", 1)[0])
        sealed = False
        if (
            encrypted is not None
            and encrypted.seal_response
            and status_code not in _NO_BODY_STATUSES
        ):
            body = self._seal(encrypted, status_code, headers, body)
            sealed = True
        policy = self.state.settings.sign_responses
        if sign_all or (policy == "unsealed" and encrypted is not None and not sealed):
            self._sign(headers, body)
        if status_code not in _NO_BODY_STATUSES:
            headers["Content-Length"] = str(len(body))
        start_response(status, headers.to_wsgi_list())
        return [body]

    def _seal(
        self, encrypted: EncryptedRequest, status_code: int, headers: Headers, body: bytes
    ) -> bytes:
        app_content_type = headers.get("Content-Type")
        headers.remove("Content-Type")
        encoding = headers.get("Content-Encoding")
        if encoding is not None:  # it describes the plaintext, not the sealed body
            headers.remove("Content-Encoding")
            headers["X-Plaintext-Content-Encoding"] = encoding
        if encrypted.format == "J":
            headers["Content-Type"] = "application/jose"
            return formats.seal_response(
                encrypted.cek,
                body,
                request_jti=str(encrypted.request_jti),
                status=status_code,
                content_type=app_content_type,
            ).encode("ascii")
        headers["Content-Type"] = formats.JSON_CONTENT_TYPE
        if app_content_type is not None:
            headers["X-Plaintext-Content-Type"] = app_content_type
        if encrypted.format == "S":
            headers["X-Encryption-Enabled"] = "true"
            return formats.seal_session(encrypted.cek, body)
        return formats.seal_envelope_response(encrypted.cek, body)

    def _sign(self, headers: Headers, body: bytes) -> None:
        identity_key = self.state.keyring.current
        headers["X-Response-Signature"] = b64encode(sign(identity_key.private_key, body))
        headers["X-Response-Signature-Kid"] = identity_key.kid

    def _refuse(
        self, error: HybridError, start_response: StartResponse, *, sign_it: bool
    ) -> Iterable[bytes]:
        body = error_body(error)
        headers = Headers(
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(body))),
                ("Cache-Control", "no-store"),
            ]
        )
        if sign_it:
            self._sign(headers, body)
        start_response(f"{error.code} {_REASONS[error.code]}", headers.to_wsgi_list())
        return [body]


_REASONS = {
    400: "BAD REQUEST",
    401: "UNAUTHORIZED",
    409: "CONFLICT",
    413: "REQUEST ENTITY TOO LARGE",
    415: "UNSUPPORTED MEDIA TYPE",
    429: "TOO MANY REQUESTS",
    503: "SERVICE UNAVAILABLE",
}
