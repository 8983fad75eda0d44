"""The WSGI middleware: decrypt encrypted requests, seal or sign the responses.

Data flows one way: environ → detect → read (capped) → parse → unwrap → open → the app, with an
ordinary environ → seal / sign → response.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from werkzeug.datastructures import Headers

from . import signals
from .core import formats, jwe, signatures
from .core.encoding import JsonObjectText, b64encode
from .core.rsa import PrivateKey, sign, unwrap_oaep
from .errors import (
    HybridError,
    InvalidPayload,
    InvalidSession,
    PayloadTooLarge,
    ReplayedRequest,
    StoreUnavailable,
    UnknownKey,
    error_body,
    refusal_headers,
)
from .sessions import LiveSession, looks_like_session_id
from .state import HybridState

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

logger = logging.getLogger("flask_hybrid")

#: The environ key under which the app finds the :class:`EncryptedRequest` it was sent.
ENVIRON_KEY = "flask_hybrid.request"
#: The refusal (a :class:`~flask_hybrid.errors.HybridError`) of a request refused by the
#: middleware, or by the blueprint inside the app; such an answer is signed.
REFUSAL_KEY = "flask_hybrid.refusal"
#: Set by the blueprint once it has raised the middleware's refusal inside the app.
REFUSAL_RAISED_KEY = "flask_hybrid.refusal_raised"
#: The request as it was sent (method and key headers), which response signatures cover.
ANSWERED_KEY = "flask_hybrid.answered_request"
#: Our response headers, listed in ``Access-Control-Expose-Headers`` on CORS responses.
EXPOSED_HEADERS = (
    *signatures.RESPONSE_HEADERS,
    "X-Response-Signature",
    "X-Response-Signature-Kid",
    "X-Plaintext-Content-Type",
    "X-Plaintext-Content-Encoding",
    "X-Encryption-Enabled",
    "Retry-After",
)
_SIGNED_REQUEST_HEADERS = (
    ("Content-Digest", "HTTP_CONTENT_DIGEST"),
    ("X-Hybrid-JWE", "HTTP_X_HYBRID_JWE"),
    ("X-Encrypted-Aes-Key", "HTTP_X_ENCRYPTED_AES_KEY"),
)
# Validators of the app's body: on a sealed answer they would describe the plaintext.
_PLAINTEXT_VALIDATORS = ("ETag", "Content-MD5", "Digest", "Content-Digest")
_READ_CHUNK = 64 * 1024
_NO_BODY = frozenset({204, 304})


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


_CONTENT_LENGTH = re.compile(r"[0-9]+")  # ASCII digits only: "²".isdigit() is True
_READ_AT_MOST = 1024 * 1024  # bytes asked of the input stream in one call
# What str.strip() took off an ASCII compact JWE before it was read as bytes.
_JWE_WHITESPACE = b" \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"


def _read_body(
    environ: WSGIEnvironment, limit: int, content_digest: signatures.RequestDigest
) -> bytearray:
    """The whole body in one buffer, refusing (413) before reading more than ``limit`` bytes.

    ``content_digest`` sees every byte as it arrives, so checking it needs no second pass.
    """
    stream = environ["wsgi.input"]
    declared = environ.get("CONTENT_LENGTH", "").strip(" \t")
    if declared:
        if not _CONTENT_LENGTH.fullmatch(declared):
            raise InvalidPayload("bad_content_length")
        significant = declared.lstrip("0") or "0"  # int() refuses over 4300 digits, zeros too
        if len(significant) > len(str(limit)) or int(significant) > limit:
            raise PayloadTooLarge("body_too_large")
        return _read_into_buffer(stream, int(significant), content_digest)
    chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
    if not (chunked or environ.get("wsgi.input_terminated")):
        return bytearray()  # no length and no terminated stream: WSGI says there is no body
    body = _read_into_buffer(stream, limit + 1, content_digest)
    if len(body) > limit:
        raise PayloadTooLarge("body_too_large")
    return body


def _read_into_buffer(
    stream: Any, at_most: int, content_digest: signatures.RequestDigest
) -> bytearray:
    """Up to ``at_most`` bytes (fewer at the end of the stream) in one bytearray.

    The buffer doubles as data arrives rather than being sized from ``Content-Length`` up
    front, so a client that declares much and sends little costs little; ``readinto`` fills
    it without a chunk copy when the stream has it.
    """
    body = bytearray(min(at_most, _READ_CHUNK))
    filled = 0
    readinto = getattr(stream, "readinto", None)
    while filled < at_most:
        if filled == len(body):
            grown = bytearray(min(at_most, 2 * len(body)))
            grown[:filled] = body
            body = grown
        with memoryview(body) as view:
            space = view[filled : min(len(body), filled + _READ_AT_MOST)]
            if readinto is not None:
                count = readinto(space) or 0
            else:
                data = stream.read(min(len(space), _READ_CHUNK))
                count = len(data)
                space[:count] = data
            content_digest.update(space[:count])
            space.release()
        if not count:
            break
        filled += count
    del body[filled:]
    return body


def _strip_range(body: bytearray) -> tuple[int, int]:
    start, end = 0, len(body)
    while start < end and body[start] in _JWE_WHITESPACE:
        start += 1
    while end > start and body[end - 1] in _JWE_WHITESPACE:
        end -= 1
    return start, end


@dataclass
class _Decrypted:
    """A request decrypted and authenticated, whose plaintext is still to be checked.

    The checks run once the wire body is let go, so that it and the JSON check never hold
    memory at the same time.
    """

    encrypted: EncryptedRequest
    plaintext: bytearray = field(repr=False)
    content_type: str | None
    jwe_header: dict[str, Any] | None = None  # J: its cty says whether JSON is required
    binding: formats.RequestBinding | None = None  # J: checked after the JSON


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
        self._unwrap_cache = _UnwrapCache()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        kind = _detect(environ)
        if kind is None:
            return self._call_app(environ, start_response, None)
        answered = answered_request(environ)  # as sent: the app sees the plaintext's headers
        environ[ANSWERED_KEY] = answered
        try:
            encrypted = self._open(environ, kind)
        except HybridError as error:
            return self._refuse(environ, start_response, error, kind)
        except Exception:  # a bug must not become a 5xx; its traceback goes to the log only
            logger.exception("flask-hybrid: unexpected error while opening a request")
            return self._refuse(environ, start_response, InvalidPayload("internal_error"), kind)
        if encrypted is not None:
            environ.pop("HTTP_CONTENT_DIGEST", None)  # it describes the wire body, not this one
            if not self.refusals_through_app:  # inside Flask the blueprint sends it
                signals.request_decrypted.send(
                    self, format=encrypted.format, session_id=encrypted.session_id
                )
        return self._call_app(environ, start_response, encrypted)

    # -- request ---------------------------------------------------------------------------
    def _open(self, environ: WSGIEnvironment, kind: str) -> EncryptedRequest | None:
        content_digest = signatures.RequestDigest(environ.get("HTTP_CONTENT_DIGEST"))
        body = _read_body(environ, self.state.settings.max_body, content_digest)
        if kind != "J" and not body and "HTTP_X_ENCRYPTED_AES_KEY" not in environ:
            return None
        content_digest.check()
        if kind == "J":
            decrypted = self._open_jwe(environ, body)
        elif body:
            decrypted = self._open_json_envelope(environ, body)
        else:
            decrypted = _Decrypted(self._open_session_header(environ), bytearray(), None)
        del body  # from here on only the plaintext is held
        self._check_plaintext(environ, decrypted)
        encrypted, content_type = decrypted.encrypted, decrypted.content_type
        environ["wsgi.input"] = io.BytesIO(decrypted.plaintext)
        environ["CONTENT_LENGTH"] = str(len(decrypted.plaintext))
        del decrypted
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

    def _open_json_envelope(self, environ: WSGIEnvironment, body: bytearray) -> _Decrypted:
        members = JsonObjectText(body)  # checked in place: the ciphertext is read as a view
        json_type = formats.REQUEST_JSON_CONTENT_TYPE
        if "encryptedAesKey" in members:
            self._require_format("S")
            envelope = formats.parse_session_envelope(members)
            session = self._live_session(environ)
            cek = self._unwrap_cache.unwrap(
                session.session_id, session.private_key, envelope.wrapped_key
            )
            plaintext = formats.decrypt_session_envelope(envelope, cek)
            encrypted = EncryptedRequest("S", cek, True, session_id=session.session_id)
            return _Decrypted(encrypted, plaintext, json_type)
        if "ek" in members:
            self._require_format("E")
            envelope_e = formats.parse_envelope(members)
            cek, plaintext = formats.decrypt_envelope(envelope_e, self.state.keyring)
            seal = environ.get("HTTP_X_ENCRYPT_RESPONSE", "").strip().lower() == "true"
            return _Decrypted(EncryptedRequest("E", cek, seal), plaintext, json_type)
        raise InvalidPayload

    def _open_session_header(self, environ: WSGIEnvironment) -> EncryptedRequest:
        self._require_format("S")
        wrapped_key = formats.parse_wrapped_key_header(environ["HTTP_X_ENCRYPTED_AES_KEY"])
        session = self._live_session(environ)
        cek = self._unwrap_cache.unwrap(session.session_id, session.private_key, wrapped_key)
        return EncryptedRequest("S", cek, True, session_id=session.session_id)

    def _open_jwe(self, environ: WSGIEnvironment, body: bytearray) -> _Decrypted:
        self._require_format("J")
        content_type = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        in_header = content_type != "application/jose"
        if in_header and body:
            raise InvalidPayload  # the header form is for bodiless requests only
        if in_header:
            token = jwe.parse_compact(environ["HTTP_X_HYBRID_JWE"].strip())
        else:
            start, end = _strip_range(body)
            token = jwe.parse_compact(memoryview(body)[start:end])  # no copy of the body
        binding = formats.read_request_binding(token.header)
        scope, private_key, session_id = self._resolve_kid(environ, binding.kid)
        cek = self._unwrap_cache.unwrap(scope, private_key, token.encrypted_key)
        plaintext = formats.decrypt_request(token, cek, allow_empty=in_header)
        encrypted = EncryptedRequest("J", cek, True, session_id, binding.jti)
        plaintext_type = None if in_header else binding.content_type
        return _Decrypted(encrypted, plaintext, plaintext_type, token.header, binding)

    def _check_plaintext(self, environ: WSGIEnvironment, decrypted: _Decrypted) -> None:
        """JSON where JSON is declared; then, for J, the binding and the replay record."""
        if decrypted.binding is None:
            if decrypted.content_type is not None:
                formats.require_json(decrypted.plaintext)
            return
        assert decrypted.jwe_header is not None
        formats.check_request_plaintext(decrypted.jwe_header, decrypted.plaintext)
        binding = decrypted.binding
        formats.check_request_binding(
            binding,
            method=environ.get("REQUEST_METHOD", "GET").upper(),
            target=request_target(environ),
            now=self.state.clock(),
            window=self.state.settings.replay_window,
        )
        if not self.state.sessions.record_request_id(binding.jti, self.state.settings.replay_ttl):
            raise ReplayedRequest("jti_seen")

    def _resolve_kid(
        self, environ: WSGIEnvironment, kid: str
    ) -> tuple[str, PrivateKey, str | None]:
        """An identity key, or a session's key when the kid is that session's id (401s)."""
        identity_key = self.state.keyring.get(kid)
        if identity_key is not None:
            self.state.limits.hit_jwe(environ.get("REMOTE_ADDR"))  # 429 before any RSA work
            return kid, identity_key.private_key, None
        if bearer_token(environ) is not None:
            session = self._live_session(environ)
            if session.session_id != kid:
                raise InvalidSession("session_kid_mismatch")
            return kid, session.private_key, kid
        if looks_like_session_id(kid) and self.state.sessions.exists(kid):
            raise InvalidSession("token_missing")  # a session kid without its token
        raise UnknownKey

    # -- refusals --------------------------------------------------------------------------
    def _refuse(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        error: HybridError,
        kind: str | None,
    ) -> Iterable[bytes]:
        log_refusal(environ, error, kind)
        environ[REFUSAL_KEY] = error
        _withhold_body(environ)  # no hook or view may read what was refused
        if self.refusals_through_app:
            return self._call_app(environ, start_response, None)
        signals.request_refused.send(self, code=error.error, reason=error.reason)
        return self._answer_refusal(environ, start_response, error)

    def _answer_refusal(
        self, environ: WSGIEnvironment, start_response: StartResponse, error: HybridError
    ) -> Iterable[bytes]:
        """The middleware's own answer: the error table's bytes, signed per the policy."""
        headers = Headers(refusal_headers(error))
        body = error_body(error)
        self._finish_headers(environ, error.code, headers, body, sign=self._signs_refusals)
        start_response(f"{error.code} {_REASONS[error.code]}", headers.to_wsgi_list())
        return [body]

    # -- response --------------------------------------------------------------------------
    def _call_app(
        self,
        environ: WSGIEnvironment,
        start_response: StartResponse,
        encrypted: EncryptedRequest | None,
    ) -> Iterable[bytes]:
        """Run the app; seal and sign its answer when that needs the body, else stream it."""
        captured: dict[str, Any] = {}
        written: list[bytes] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if exc_info is not None and captured:
                raise exc_info[1].with_traceback(exc_info[2])
            captured["status"], captured["headers"] = status, headers
            return written.append  # the legacy write(): kept and sent before the iterable

        refused_here: HybridError | None = environ.get(REFUSAL_KEY)
        app_iter = self.app(environ, capture)
        if refused_here is not None and not environ.get(REFUSAL_RAISED_KEY):
            # Refused, yet the app's blueprint hook never raised it: answer here, not the app.
            _close(app_iter)
            logger.error("flask-hybrid: the app did not raise a refusal; is the blueprint on it?")
            return self._answer_refusal(environ, start_response, refused_here)
        if not captured:  # a lazy (generator) app starts its answer only as it is read
            try:
                written.extend(app_iter)
            finally:
                _close(app_iter)
            app_iter = []
        refusal = environ.get(REFUSAL_KEY)  # also set when the blueprint refused on its own
        status: str = captured["status"]
        status_code = int(status.split(" ", 1)[0])
        headers = Headers(captured["headers"])
        policy = self.state.settings.sign_responses
        handshake = environ.get("PATH_INFO") == self.state.settings.handshake_path
        sign_it = policy == "all" or (
            policy == "unsealed" and (encrypted is not None or refusal is not None or handshake)
        )
        if encrypted is None and not sign_it and not written:  # plain: stream it as it is
            _expose_headers(headers)
            start_response(status, headers.to_wsgi_list())
            return app_iter
        try:
            body = b"".join([*written, *app_iter])
        finally:
            _close(app_iter)
        sealed = False
        if encrypted is not None and encrypted.seal_response and status_code not in _NO_BODY:
            body = self._seal(encrypted, status_code, headers, body)
            sealed = True
        binding_cek = None
        if policy == "unsealed" and encrypted is not None and not handshake and refusal is None:
            # The app's answer to a request whose CEK we hold. Sealed, the AEAD authenticates it;
            # J's seal names its request (req) and E's key is fresh each time, but S's seal names
            # nothing and a client may reuse its CEK. Unsealed (E in clear, 204/304), nothing
            # does. Those are bound to their request by an HMAC under a key derived from the CEK,
            # which only the client and this server hold: no RSA signature needed.
            sign_it = False
            if not sealed or encrypted.format == "S":
                binding_cek = encrypted.cek
        self._finish_headers(
            environ,
            status_code,
            headers,
            body,
            sign=sign_it,
            binding_cek=binding_cek,
            body_signature=not sealed,
        )
        start_response(status, headers.to_wsgi_list())
        return [body]

    @property
    def _signs_refusals(self) -> bool:
        return self.state.settings.sign_responses != "none"

    def _finish_headers(
        self,
        environ: WSGIEnvironment,
        status_code: int,
        headers: Headers,
        body: bytes,
        *,
        sign: bool,
        binding_cek: bytes | None = None,
        body_signature: bool = True,
    ) -> None:
        """Length, signatures over the final bytes, and CORS exposure of our own headers.

        ``binding_cek``: instead of the signing key's request-bound signature, an HMAC under the
        request's CEK (PROTOCOL.md); ``X-Response-Signature`` beside it if ``body_signature``.
        """
        headers.remove(signatures.REFUSAL_HEADER)  # only ever ours, and only signed
        if status_code not in _NO_BODY:
            headers["Content-Length"] = str(len(body))
        if sign or binding_cek is not None:
            self._sign(
                environ,
                status_code,
                headers,
                body,
                binding_cek=binding_cek,
                body_signature=sign or body_signature,
            )
        _expose_headers(headers)

    def _seal(
        self, encrypted: EncryptedRequest, status_code: int, headers: Headers, body: bytes
    ) -> bytes:
        app_content_type = headers.get("Content-Type")
        headers.remove("Content-Type")
        for validator in _PLAINTEXT_VALIDATORS:  # they would describe (and leak) the plaintext
            headers.remove(validator)
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

    def _sign(
        self,
        environ: WSGIEnvironment,
        status_code: int,
        headers: Headers,
        body: bytes,
        *,
        binding_cek: bytes | None = None,
        body_signature: bool = True,
    ) -> None:
        """The request-bound signature, by the signing key or (``binding_cek``) an HMAC under
        that CEK's answer key; and ``X-Response-Signature``, the published design's signature
        of the body alone, if ``body_signature``."""
        signing_key = self.state.keyring.signing
        if body_signature:
            headers["X-Response-Signature"] = b64encode(sign(signing_key.private_key, body))
            headers["X-Response-Signature-Kid"] = signing_key.kid
        if binding_cek is None:
            key: PrivateKey | bytes = signing_key.private_key
            kid = signing_key.kid
        else:
            key, kid = signatures.answer_key(binding_cek), signatures.CEK_KEYID
        refusal: HybridError | None = environ.get(REFUSAL_KEY)
        for name, value in signatures.sign_response(
            key,
            kid,
            status=status_code,
            body=body,
            request=environ.get(ANSWERED_KEY) or answered_request(environ),
            created=self.state.clock(),
            refusal=None if refusal is None else refusal.error,
        ):
            headers[name] = value


def answered_request(environ: WSGIEnvironment) -> signatures.AnsweredRequest:
    """The request parts a response signature covers, read from the environ as sent."""
    headers = [(name, environ[key]) for name, key in _SIGNED_REQUEST_HEADERS if key in environ]
    return signatures.AnsweredRequest(environ.get("REQUEST_METHOD", "GET"), headers)


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


def _expose_headers(headers: Headers) -> None:
    """List our headers in ``Access-Control-Expose-Headers`` on a CORS response that has them."""
    if "Access-Control-Allow-Origin" not in headers:
        return
    listed = [
        name.strip()
        for value in headers.getlist("Access-Control-Expose-Headers")
        for name in value.split(",")
        if name.strip()
    ]
    known = {name.lower() for name in listed}
    ours = [name for name in EXPOSED_HEADERS if name in headers and name.lower() not in known]
    if ours:
        headers["Access-Control-Expose-Headers"] = ", ".join([*listed, *ours])


def _close(app_iter: Iterable[bytes]) -> None:
    close = getattr(app_iter, "close", None)
    if close is not None:
        close()


_REASONS = {
    400: "BAD REQUEST",
    401: "UNAUTHORIZED",
    409: "CONFLICT",
    413: "REQUEST ENTITY TOO LARGE",
    415: "UNSUPPORTED MEDIA TYPE",
    429: "TOO MANY REQUESTS",
    503: "SERVICE UNAVAILABLE",
}
