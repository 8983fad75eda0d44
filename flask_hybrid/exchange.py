"""One request through flask-hybrid and its answer, decided without a web framework.

h11's lesson: bytes and events in, decisions out. A transport (the WSGI middleware) reads the
request head into a :class:`RequestHead` and asks :meth:`Exchanges.start` whether the request
is encrypted. If it is, the transport fills the :class:`BodyBuffer` the :class:`Exchange` hands
it (``readinto`` straight from its input, or ``feed`` a chunk at a time), calls
:meth:`Exchange.open`, and gives its app the :class:`OpenedRequest`'s plaintext. The app's
answer goes through :meth:`Exchanges.finish`, which seals and signs it, or says that it may be
streamed as it is (:meth:`Exchanges.must_buffer`). Nothing here knows WSGI, Flask or Werkzeug.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .core import ehbp, formats, jwe, signatures
from .core.encoding import NOT_PARSED, JsonObjectText, b64encode, loads_json_object
from .core.rsa import PrivateKey, sign, unwrap_oaep
from .errors import (
    HybridError,
    InvalidPayload,
    InvalidSession,
    PayloadTooLarge,
    ReplayedRequest,
    UnknownKey,
    error_body,
    refusal_headers,
)
from .sessions import LiveSession, looks_like_session_id
from .state import HybridState

HeaderList = list[tuple[str, str]]

#: Our response headers, listed in ``Access-Control-Expose-Headers`` on CORS responses.
EXPOSED_HEADERS = (
    *signatures.RESPONSE_HEADERS,
    "X-Response-Signature",
    "X-Response-Signature-Kid",
    "X-Plaintext-Content-Type",
    "X-Plaintext-Content-Encoding",
    "X-Encryption-Enabled",
    "Retry-After",
    ehbp.RESPONSE_NONCE_HEADER,
)
#: The request headers a response signature covers, under the names they are signed with.
SIGNED_REQUEST_HEADERS = ("Content-Digest", "X-Hybrid-JWE", "X-Encrypted-Aes-Key")
#: Request headers an exchange reads (lower case), besides the content type and length.
READ_HEADERS = (
    "authorization",
    "x-device-id",
    "x-encryption-enabled",
    "x-encrypt-response",
    "x-encrypted-aes-key",
    "x-hybrid-jwe",
    "content-digest",
    "ehbp-encapsulated-key",
)
# Validators of the app's body: on a sealed answer they would describe the plaintext.
_PLAINTEXT_VALIDATORS = frozenset({"etag", "content-md5", "digest", "content-digest"})
_NO_BODY = frozenset({204, 304})
# Framing headers of the app's answer that a sealed stream of frames replaces.
_STREAM_DROPPED = frozenset(
    {"content-length", "transfer-encoding", ehbp.RESPONSE_NONCE_HEADER.lower()}
)
_READ_AT_MOST = 1024 * 1024  # bytes offered to one readinto call
_SMALL_ENVELOPE = 64 * 1024  # S and E bodies up to this size are parsed by the C parser
_FIRST_BUFFER = 64 * 1024
# What str.strip() took off an ASCII compact JWE before it was read as bytes.
_JWE_WHITESPACE = b" \t\n\x0b\x0c\r\x1c\x1d\x1e\x1f"
# The largest wire body of a buffered format for a plaintext of HYBRID_MAX_BODY bytes: base64
# (4/3) of the ciphertext and its tag, plus the envelope (a JWE header may take 8 KiB alone).
_ENVELOPE_ALLOWANCE = 16 * 1024
REASONS = {
    400: "BAD REQUEST",
    401: "UNAUTHORIZED",
    409: "CONFLICT",
    413: "REQUEST ENTITY TOO LARGE",
    415: "UNSUPPORTED MEDIA TYPE",
    422: "UNPROCESSABLE ENTITY",
    429: "TOO MANY REQUESTS",
    503: "SERVICE UNAVAILABLE",
}


def wire_limit(max_plaintext: int) -> int:
    """The largest body a buffered format may send for ``max_plaintext`` bytes of plaintext."""
    return 4 * ((max_plaintext + 16 + 2) // 3) + _ENVELOPE_ALLOWANCE


def detect(
    content_type: str,
    encryption_enabled: str | None,
    jwe_header: str | None,
    encapsulated_key: str | None = None,
) -> str | None:
    """``"H"``, ``"J"``, ``"SE"`` (told apart later by the body) or ``None`` for a plain
    request."""
    if encapsulated_key is not None:
        return "H"
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type.startswith("multipart/"):
        return None
    if media_type == "application/jose" or jwe_header:
        return "J"
    if encryption_enabled is not None and encryption_enabled.strip().lower() == "true":
        return "SE"
    return None


@dataclass(frozen=True)
class EncryptedRequest:
    """How a request arrived, for the response and for views that want to know."""

    format: str  # "S", "E", "J" or "H"
    cek: bytes = field(repr=False)  # H: empty (its keys live in the HPKE context)
    seal_response: bool
    session_id: str | None = None
    request_jti: str | None = None


@dataclass(eq=False)
class RequestHead:
    """What an exchange needs of a request before its body.

    ``headers`` holds the :data:`READ_HEADERS` the request has, under lower-case names;
    ``content_length`` is the header as sent; ``streamed_body`` says that a body follows with no
    declared length (chunked), so it ends with the stream.
    """

    method: str
    target: str  # the path and query exactly as sent: what J's htu names
    path: str
    remote_addr: str | None
    content_type: str
    content_length: str | None
    streamed_body: bool
    headers: Mapping[str, str]

    def answered(self) -> signatures.AnsweredRequest:
        """The parts of this request a response signature covers, as it was sent."""
        return answered_request(self.method, self.headers)

    @property
    def bearer_token(self) -> str | None:
        """The token of an ``Authorization: Bearer`` header, if there is one."""
        return bearer_token(self.headers.get("authorization", ""))


def bearer_token(authorization: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` value, if it is one."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def answered_request(method: str, headers: Mapping[str, str]) -> signatures.AnsweredRequest:
    """The request parts a response signature covers, from its lower-case header mapping."""
    signed = [(name, headers.get(name.lower())) for name in SIGNED_REQUEST_HEADERS]
    return signatures.AnsweredRequest(method, [(n, v) for n, v in signed if v is not None])


@dataclass(eq=False)
class OpenedRequest:
    """A request decrypted, authenticated and checked: what the app is to be given.

    ``json`` is the plaintext's JSON value when checking it built one (small documents), so
    that the app need not parse it again; else :data:`~flask_hybrid.core.encoding.NOT_PARSED`.
    """

    encrypted: EncryptedRequest
    plaintext: bytearray = field(repr=False)
    content_type: str | None
    json: Any = field(default=NOT_PARSED, repr=False)


@dataclass(eq=False)
class _Decrypted:
    """A request decrypted and authenticated, whose plaintext is still to be checked."""

    encrypted: EncryptedRequest
    plaintext: bytearray = field(repr=False)
    content_type: str | None
    binding: formats.RequestBinding | None = None  # J: checked after the JSON


class BodyBuffer:
    """A request body gathered into one buffer, refused (413) past ``limit`` bytes.

    Sans-I/O: a transport either reads straight into :meth:`space` and reports the count to
    :meth:`commit`, or hands over what it received to :meth:`feed`. The buffer doubles as data
    arrives rather than being sized from ``Content-Length`` up front, so a client that declares
    much and sends little costs little. The ``Content-Digest`` sees every byte once, as it comes.
    """

    def __init__(
        self, limit: int, expected: int | None, content_digest: signatures.RequestDigest
    ) -> None:
        self._at_most = limit + 1 if expected is None else expected
        self._limit = limit
        self._buffer = bytearray(min(self._at_most, _FIRST_BUFFER))
        self._filled = 0
        self._ended = self._at_most == 0
        self._digest = content_digest

    @property
    def done(self) -> bool:
        return self._ended

    def space(self) -> memoryview:
        """Where the next bytes go (release the view before :meth:`commit`)."""
        if self._filled == len(self._buffer):
            grown = bytearray(min(self._at_most, 2 * len(self._buffer)))
            grown[: self._filled] = self._buffer
            self._buffer = grown
        end = min(len(self._buffer), self._filled + _READ_AT_MOST)
        return memoryview(self._buffer)[self._filled : end]

    def commit(self, count: int) -> None:
        """``count`` bytes were written into the last :meth:`space`; 0 is the end of the body."""
        if not count:
            self._ended = True
            return
        with memoryview(self._buffer) as view:
            self._digest.update(view[self._filled : self._filled + count])
        self._filled += count
        if self._filled > self._limit:
            raise PayloadTooLarge("body_too_large")
        if self._filled >= self._at_most:
            self._ended = True

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Take bytes a transport received (copied in)."""
        with memoryview(data) as incoming:
            taken = 0
            while taken < len(incoming) and not self._ended:
                with self.space() as space:
                    count = min(len(space), len(incoming) - taken)
                    space[:count] = incoming[taken : taken + count]
                self.commit(count)
                taken += count

    def take(self) -> bytearray:
        """The body; the buffer is handed over, not copied."""
        body, self._buffer = self._buffer, bytearray()
        del body[self._filled :]
        return body


class _UnwrapCache:
    """CEKs by a hash of (key scope, wrapped key): a client reusing one CEK skips the RSA work."""

    def __init__(self, capacity: int = 1024) -> None:
        self._entries: OrderedDict[bytes, bytes] = OrderedDict()
        self._capacity = capacity
        self._lock = threading.Lock()

    def unwrap(
        self,
        scope: str,
        key: PrivateKey,
        wrapped_key: bytes,
        before_rsa: Callable[[], None] | None = None,
    ) -> bytes:
        """The CEK, from the cache or unwrapped now (``before_rsa`` first: a rate limit)."""
        digest = hashlib.sha256(scope.encode() + b"\0" + wrapped_key).digest()
        with self._lock:
            cek = self._entries.get(digest)
            if cek is not None:
                self._entries.move_to_end(digest)
                return cek
        if before_rsa is not None:
            before_rsa()
        cek = unwrap_oaep(key, wrapped_key)
        with self._lock:
            self._entries[digest] = cek
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
        return cek


class Exchanges:
    """What every exchange of one app shares: its :class:`HybridState` and a CEK cache.

    ::

        exchanges = Exchanges(state)
        exchange = exchanges.start(head)      # None: a plain request
        body = exchange.body_buffer()         # then fill it: readinto(space) / feed(data)
        opened = exchange.open(body.take())   # None: nothing to decrypt (bodiless S/E)
        headers, body = exchanges.finish(...) # the app's answer, sealed and signed
    """

    def __init__(self, state: HybridState) -> None:
        self.state = state
        self._unwrap_cache = _UnwrapCache()

    def start(self, head: RequestHead) -> Exchange | None:
        """The exchange of an encrypted request, or ``None`` when it is plain. (A transport
        that ran :func:`detect` itself, to keep its plain path short, makes the
        :class:`Exchange` directly.)"""
        kind = detect(
            head.content_type,
            head.headers.get("x-encryption-enabled"),
            head.headers.get("x-hybrid-jwe"),
            head.headers.get("ehbp-encapsulated-key"),
        )
        return None if kind is None else Exchange(self, head, kind)

    # -- answers ---------------------------------------------------------------------------
    def is_handshake(self, path: str) -> bool:
        return path == self.state.settings.handshake_path

    def must_buffer(
        self, path: str, encrypted: EncryptedRequest | None, refusal: HybridError | None
    ) -> bool:
        """Whether the app's answer must be held whole (to seal or sign it), or may stream."""
        policy = self.state.settings.sign_responses
        return (
            encrypted is not None
            or policy == "all"
            or (policy == "unsealed" and (refusal is not None or self.is_handshake(path)))
        )

    def finish(
        self,
        *,
        answered: signatures.AnsweredRequest,
        path: str,
        encrypted: EncryptedRequest | None,
        refusal: HybridError | None,
        status_code: int,
        headers: HeaderList,
        body: bytes,
    ) -> tuple[HeaderList, list[bytes]]:
        """The app's answer as it leaves, as pieces to write in order: sealed under the
        request's key when its format says so (a large answer is never held sealed in one
        piece), then signed per ``HYBRID_SIGN_RESPONSES`` over the bytes and status that leave."""
        policy = self.state.settings.sign_responses
        handshake = self.is_handshake(path)
        sign_it = policy == "all" or (
            policy == "unsealed" and (encrypted is not None or refusal is not None or handshake)
        )
        sealed = False
        parts = [body]
        if encrypted is not None and encrypted.seal_response and status_code not in _NO_BODY:
            headers, parts = self._seal(encrypted, status_code, headers, body)
            del body
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
        headers = self._finish_headers(
            answered,
            refusal,
            status_code,
            headers,
            parts,
            sign=sign_it,
            binding_cek=binding_cek,
            body_signature=not sealed,
        )
        return headers, parts

    def refusal_answer(
        self, answered: signatures.AnsweredRequest, error: HybridError
    ) -> tuple[HeaderList, bytes]:
        """flask-hybrid's own answer to a refused request: the error table's bytes, signed
        unless ``HYBRID_SIGN_RESPONSES`` is ``none``."""
        body = error_body(error)
        headers = self._finish_headers(
            answered,
            error,
            error.code,
            list(refusal_headers(error)),
            [body],
            sign=self.state.settings.sign_responses != "none",
        )
        return headers, body

    def _finish_headers(
        self,
        answered: signatures.AnsweredRequest,
        refusal: HybridError | None,
        status_code: int,
        headers: HeaderList,
        parts: list[bytes],
        *,
        sign: bool,
        binding_cek: bytes | None = None,
        body_signature: bool = True,
    ) -> HeaderList:
        """Length, signatures over the final bytes, and CORS exposure of our own headers.

        ``binding_cek``: instead of the signing key's request-bound signature, an HMAC under the
        request's CEK (PROTOCOL.md); ``X-Response-Signature`` beside it if ``body_signature``.
        """
        # only ever ours, and only signed; the length is that of the bytes that leave
        drop = {signatures.REFUSAL_HEADER.lower()}
        if status_code not in _NO_BODY:
            drop.add("content-length")
        if sign or binding_cek is not None:
            drop.update(name.lower() for name in signatures.RESPONSE_HEADERS)
            drop.update(("x-response-signature", "x-response-signature-kid"))
        headers = [(name, value) for name, value in headers if name.lower() not in drop]
        if status_code not in _NO_BODY:
            headers.append(("Content-Length", str(sum(map(len, parts)))))
        if sign or binding_cek is not None:
            headers.extend(
                self._signature_headers(
                    answered,
                    refusal,
                    status_code,
                    parts,
                    binding_cek=binding_cek,
                    body_signature=sign or body_signature,
                )
            )
        return expose_headers(headers)

    def _seal(
        self, encrypted: EncryptedRequest, status_code: int, headers: HeaderList, body: bytes
    ) -> tuple[HeaderList, list[bytes]]:
        app_content_type = None
        kept: HeaderList = []
        for name, value in headers:
            lowered = name.lower()
            if lowered == "content-type":
                app_content_type = value
            elif lowered == "content-encoding":  # it describes the plaintext, not the seal
                kept.append(("X-Plaintext-Content-Encoding", value))
            elif lowered not in _PLAINTEXT_VALIDATORS:  # they would describe (and leak) it
                kept.append((name, value))
        if encrypted.format == "J":
            kept.append(("Content-Type", "application/jose"))
            sealed = formats.seal_response_parts(
                encrypted.cek,
                body,
                request_jti=str(encrypted.request_jti),
                status=status_code,
                content_type=app_content_type,
            )
            return kept, sealed
        kept.append(("Content-Type", formats.JSON_CONTENT_TYPE))
        if app_content_type is not None:
            kept.append(("X-Plaintext-Content-Type", app_content_type))
        if encrypted.format == "S":
            kept.append(("X-Encryption-Enabled", "true"))
            return kept, formats.seal_session_parts(encrypted.cek, body)
        return kept, formats.seal_envelope_response_parts(encrypted.cek, body)

    def _signature_headers(
        self,
        answered: signatures.AnsweredRequest,
        refusal: HybridError | None,
        status_code: int,
        parts: list[bytes],
        *,
        binding_cek: bytes | None,
        body_signature: bool,
    ) -> HeaderList:
        """The request-bound signature, by the signing key or (``binding_cek``) an HMAC under
        that CEK's answer key; and ``X-Response-Signature``, the published design's signature
        of the body alone, if ``body_signature``."""
        signing_key = self.state.keyring.signing
        added: HeaderList = []
        if body_signature:
            body = parts[0] if len(parts) == 1 else b"".join(parts)  # sealed and "all" only
            added.append(("X-Response-Signature", b64encode(sign(signing_key.private_key, body))))
            added.append(("X-Response-Signature-Kid", signing_key.kid))
        if binding_cek is None:
            key: PrivateKey | bytes = signing_key.private_key
            kid = signing_key.kid
        else:
            key, kid = signatures.answer_key(binding_cek), signatures.CEK_KEYID
        added.extend(
            signatures.sign_response(
                key,
                kid,
                status=status_code,
                body=parts,
                request=answered,
                created=self.state.clock(),
                refusal=None if refusal is None else refusal.error,
            )
        )
        return added


class Exchange:
    """One encrypted request: its body gathered, opened and checked, the answer's key kept."""

    def __init__(self, exchanges: Exchanges, head: RequestHead, kind: str) -> None:
        self._exchanges = exchanges
        self._state = exchanges.state
        self.head = head
        self.kind = kind  # "J" or "SE", as detected; "S" or "E" once the body says
        self.encrypted: EncryptedRequest | None = None
        self._content_digest = signatures.RequestDigest(head.headers.get("content-digest"))
        self._opener: ehbp.RequestOpener
        self._sealer: ehbp.ResponseSealer | None = None

    @property
    def format_name(self) -> str:
        return self.encrypted.format if self.encrypted is not None else self.kind

    @property
    def streams(self) -> bool:
        """Whether the body is opened as it arrives and the answer sealed as it leaves (H)."""
        return self.kind == "H"

    # -- streamed request (format H) ------------------------------------------------------
    def start_stream(self) -> bool:
        """Set up the request's HPKE context; ``False`` for a bodiless request, which passes as
        it is (``Content-Length: 0`` or no body at all, as EHBP's server does)."""
        self._require_format("H")
        head = self.head
        declared = (head.content_length or "").strip(" \t")
        if declared and not (declared.isascii() and declared.isdigit()):
            raise InvalidPayload("bad_content_length")
        if declared.lstrip("0") == "" and not (declared == "" and head.streamed_body):
            return False
        keys = self._state.keyring.hpke
        if keys is None:
            raise InvalidPayload("hpke_not_configured")
        self._opener = ehbp.RequestOpener(
            keys.keys,
            head.headers["ehbp-encapsulated-key"],
            max_body=self._state.settings.max_body,
        )
        return True

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        """Plaintexts of the frames ``data`` completes, each only once it authenticated. The
        first one proves the key: from then on the answer can be sealed to it."""
        try:
            return self._opener.feed(data)
        finally:  # a refusal of a later frame in the same data is sealed to the proved key
            if self._sealer is None and self._opener.authenticated:
                self._sealer = self._opener.response_sealer()
                self.encrypted = EncryptedRequest("H", b"", True)

    def end_of_body(self) -> None:
        """The body ended: refused if it stopped inside a frame or held no frame at all."""
        self._opener.finish()

    @property
    def proved(self) -> bool:
        """Whether a frame has opened, so that the app may be called and its answer sealed."""
        return self._sealer is not None

    # -- streamed answer (format H) -------------------------------------------------------
    def stream_headers(self, headers: HeaderList) -> HeaderList:
        """The headers of the sealed answer: its nonce; no length (frames add to it); no
        validator or coding of the plaintext, which would describe it (and leak it)."""
        assert self._sealer is not None
        kept: HeaderList = []
        for name, value in headers:
            lowered = name.lower()
            if lowered == "content-encoding":
                kept.append(("X-Plaintext-Content-Encoding", value))
            elif lowered not in _PLAINTEXT_VALIDATORS and lowered not in _STREAM_DROPPED:
                kept.append((name, value))
        kept.append((ehbp.RESPONSE_NONCE_HEADER, self._sealer.nonce_header))
        return expose_headers(kept)

    def seal_chunk(self, plaintext: bytes) -> bytes:
        """Frames of one chunk of the app's answer, to be written at once."""
        assert self._sealer is not None
        return self._sealer.seal(plaintext)

    # -- request ---------------------------------------------------------------------------
    def body_buffer(self) -> BodyBuffer:
        """Where the wire body goes; refuses a declared length past the limit (413) at once."""
        limit = wire_limit(self._state.settings.max_body)
        declared = self.head.content_length
        if declared is not None and declared.strip(" \t"):
            declared = declared.strip(" \t")
            if not declared.isascii() or not declared.isdigit():  # "²".isdigit() is True
                raise InvalidPayload("bad_content_length")
            significant = declared.lstrip("0") or "0"  # int() refuses over 4300 digits
            if len(significant) > len(str(limit)) or int(significant) > limit:
                raise PayloadTooLarge("body_too_large")
            return BodyBuffer(limit, int(significant), self._content_digest)
        if not self.head.streamed_body:
            return BodyBuffer(limit, 0, self._content_digest)  # no length, no stream: no body
        return BodyBuffer(limit, None, self._content_digest)

    def open(self, body: bytearray) -> OpenedRequest | None:
        """Decrypt, authenticate and check the request; ``None`` when there is nothing to open
        (a bodiless S or E request without a wrapped key: it passes as it is)."""
        head = self.head
        if self.kind != "J" and not body and "x-encrypted-aes-key" not in head.headers:
            return None
        self._content_digest.check()
        if self.kind == "J":
            decrypted = self._decrypt_jwe(body)
        elif body:
            decrypted = self._decrypt_json_envelope(body)
        else:
            decrypted = _Decrypted(self._open_session_header(), bytearray(), None)
        del body  # from here on only the plaintext is held: the checks never hold both
        plaintext = decrypted.plaintext
        if len(plaintext) > self._state.settings.max_body:
            raise PayloadTooLarge("body_too_large")
        binding = decrypted.binding  # J's cty says whether JSON is required, header form too
        declared_type = decrypted.content_type if binding is None else binding.content_type
        value = NOT_PARSED
        if plaintext and declared_type == formats.REQUEST_JSON_CONTENT_TYPE:
            value = formats.require_json(plaintext)
        if binding is not None:
            self._check_binding(binding)
        self.encrypted = decrypted.encrypted
        return OpenedRequest(decrypted.encrypted, plaintext, decrypted.content_type, value)

    def _require_format(self, name: str) -> None:
        if name not in self._state.settings.formats:
            raise InvalidPayload

    def _live_session(self) -> LiveSession:
        head = self.head
        return self._state.sessions.verify(
            head.bearer_token, head.headers.get("x-device-id"), head.remote_addr
        )

    def _unwrap(
        self,
        scope: str,
        key: PrivateKey,
        wrapped_key: bytes,
        before_rsa: Callable[[], None] | None = None,
    ) -> bytes:
        return self._exchanges._unwrap_cache.unwrap(scope, key, wrapped_key, before_rsa)

    def _decrypt_json_envelope(self, body: bytearray) -> _Decrypted:
        # A small envelope goes through the C parser (its tree is a few short strings, at most
        # a few hundred KiB whatever it holds); a large one is checked in place, its ciphertext
        # read as a view into the body, so that no copy of it is ever made.
        members: formats.EnvelopeBody = (
            loads_json_object(body) if len(body) <= _SMALL_ENVELOPE else JsonObjectText(body)
        )
        json_type = formats.REQUEST_JSON_CONTENT_TYPE
        if "encryptedAesKey" in members:
            self._require_format("S")
            envelope = formats.parse_session_envelope(members)
            session = self._live_session()
            cek = self._unwrap(session.session_id, session.private_key, envelope.wrapped_key)
            plaintext = formats.decrypt_session_envelope(envelope, cek)
            encrypted = EncryptedRequest("S", cek, True, session_id=session.session_id)
            return _Decrypted(encrypted, plaintext, json_type)
        if "ek" in members:
            self._require_format("E")
            envelope_e = formats.parse_envelope(members)
            cek, plaintext = formats.decrypt_envelope(envelope_e, self._state.keyring)
            seal = self.head.headers.get("x-encrypt-response", "").strip().lower() == "true"
            return _Decrypted(EncryptedRequest("E", cek, seal), plaintext, json_type)
        raise InvalidPayload

    def _open_session_header(self) -> EncryptedRequest:
        self._require_format("S")
        wrapped_key = formats.parse_wrapped_key_header(self.head.headers["x-encrypted-aes-key"])
        session = self._live_session()
        cek = self._unwrap(session.session_id, session.private_key, wrapped_key)
        return EncryptedRequest("S", cek, True, session_id=session.session_id)

    def _decrypt_jwe(self, body: bytearray) -> _Decrypted:
        self._require_format("J")
        head = self.head
        in_header = head.content_type.partition(";")[0].strip().lower() != "application/jose"
        if in_header and body:
            raise InvalidPayload  # the header form is for bodiless requests only
        if in_header:
            token = jwe.parse_compact(head.headers["x-hybrid-jwe"].strip())
        else:
            start, end = _strip_range(body)
            token = jwe.parse_compact(memoryview(body)[start:end])  # no copy of the body
        binding = formats.read_request_binding(token.header)
        scope, private_key, session_id = self._resolve_kid(binding.kid)
        # HYBRID_JWE_LIMIT guards the RSA work of identity-key requests: counted (429) before
        # an unwrap, not when the client's CEK is already known (no RSA work, no count).
        limit = None if session_id is not None else self._hit_jwe_limit
        cek = self._unwrap(scope, private_key, token.encrypted_key, limit)
        plaintext = formats.decrypt_request(token, cek, allow_empty=in_header)
        encrypted = EncryptedRequest("J", cek, True, session_id, binding.jti)
        content_type = None if in_header else binding.content_type
        return _Decrypted(encrypted, plaintext, content_type, binding)

    def _check_binding(self, binding: formats.RequestBinding) -> None:
        """J's method, target and time, then its replay record (once everything else passed)."""
        state = self._state
        formats.check_request_binding(
            binding,
            method=self.head.method.upper(),
            target=self.head.target,
            now=state.clock(),
            window=state.settings.replay_window,
        )
        if not state.sessions.record_request_id(binding.jti, state.settings.replay_ttl):
            raise ReplayedRequest("jti_seen")

    def _hit_jwe_limit(self) -> None:
        self._state.limits.hit_jwe(self.head.remote_addr)

    def _resolve_kid(self, kid: str) -> tuple[str, PrivateKey, str | None]:
        """An identity key, or a session's key when the kid is that session's id (401s)."""
        identity_key = self._state.keyring.get(kid)
        if identity_key is not None:
            return kid, identity_key.private_key, None
        if self.head.bearer_token is not None:
            session = self._live_session()
            if session.session_id != kid:
                raise InvalidSession("session_kid_mismatch")
            return kid, session.private_key, kid
        if looks_like_session_id(kid) and self._state.sessions.exists(kid):
            raise InvalidSession("token_missing")  # a session kid without its token
        raise UnknownKey


def _strip_range(body: bytearray) -> tuple[int, int]:
    start, end = 0, len(body)
    while start < end and body[start] in _JWE_WHITESPACE:
        start += 1
    while end > start and body[end - 1] in _JWE_WHITESPACE:
        end -= 1
    return start, end


def expose_headers(headers: HeaderList) -> HeaderList:
    """List our headers in ``Access-Control-Expose-Headers`` on a CORS response that has them."""
    names = {name.lower() for name, _ in headers}
    if "access-control-allow-origin" not in names:
        return headers
    listed = [
        item.strip()
        for name, value in headers
        if name.lower() == "access-control-expose-headers"
        for item in value.split(",")
        if item.strip()
    ]
    known = {item.lower() for item in listed}
    ours = [name for name in EXPOSED_HEADERS if name.lower() in names - known]
    if not ours:
        return headers
    kept = [(n, v) for n, v in headers if n.lower() != "access-control-expose-headers"]
    kept.append(("Access-Control-Expose-Headers", ", ".join([*listed, *ours])))
    return kept
