"""The Python client: a :class:`requests.Session` that speaks formats S, E and J of PROTOCOL.md.

::

    from flask_hybrid.client import HybridSession

    with HybridSession("https://api.example.com", format="jwe") as session:
        response = session.post("/api/echo", json={"a": 1})
        response.json()  # the decrypted body; status and headers are the app's

Request bodies are encrypted and sealed responses opened on the way back, so the returned
:class:`requests.Response` looks like the app's own. Refusals by flask-hybrid itself raise a
:class:`HybridClientError` subclass; the app's own error statuses are returned, as requests does.

Every request carries ``Content-Digest`` (RFC 9530) of its body as sent, and every answer that is
not sealed under this request's key (a refusal, the handshake, a bodiless answer to a sealed
request, a plaintext format E answer) must carry an RFC 9421 signature by one of the server's
signing keys that covers this request's method, its ``Content-Digest`` and, for a bodiless
request, its key header (``docs/PROTOCOL.md``, "Request-bound response signatures"). Otherwise
the client raises :class:`SignatureError` and does not retry: a proxy cannot answer a request
with a refusal captured from another one, or turn an answer into an empty 204. The client retries
by itself (refetching the keys on ``unknown_key``, handshaking again on ``invalid_session``) only
after such a verified refusal whose signature also covers ``X-Hybrid-Refusal`` naming its code,
which proves that flask-hybrid refused it and the app never ran it. A plaintext format E answer
of the app that merely looks like a refusal is returned as the app's answer.

Security: the identity and signing keys come from ``/hybrid/jwks.json`` over the connection
itself, so without ``pinned_kid`` / ``pinned_signing_kid`` the client trusts whichever server TLS
lets it reach. Pin the kids (RFC 7638 thumbprints, checked against the key material) to trust
those keys only.
"""

from __future__ import annotations

import email.utils
import json as jsonlib
import logging
import os
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timezone
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
from requests.hooks import default_hooks, dispatch_hook
from requests.sessions import merge_setting
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers

from . import errors
from .core import aead, ehbp, formats, hpke, jwe, rsa, signatures
from .core.encoding import (
    b64encode,
    b64url_encode,
    loads_json,
    loads_json_object,
)
from .core.keyring import parse_jwks
from .errors import InvalidPayload

__all__ = [
    "EncryptionRequiredError",
    "HybridClientError",
    "HybridSession",
    "InvalidPayloadError",
    "InvalidSessionError",
    "KeyConfigMismatchError",
    "PayloadTooLargeError",
    "RateLimitedError",
    "ReplayedRequestError",
    "ResponseError",
    "SentRequest",
    "SignatureError",
    "StoreUnavailableError",
    "UnknownKeyError",
    "VerifiedSignature",
    "content_digest",
    "verify_response_signature",
]

logger = logging.getLogger(__name__)

Format = Literal["jwe", "session", "envelope", "ehbp"]
EnvelopePadding = Literal["oaep", "pkcs1v15"]

_FORMATS = ("jwe", "session", "envelope", "ehbp")
_PADDINGS = ("oaep", "pkcs1v15")
_JOSE = "application/jose"
_JSON = formats.JSON_CONTENT_TYPE
_JTI_BYTES = 16
_EXPIRY_MARGIN = 5.0  # renew a session this many seconds early (at most 10% of its life)
_CLOSE_TIMEOUT = 10.0
_BODILESS_STATUSES = frozenset({204, 205, 304})  # and 1xx: answers that carry no body

#: Marks flask-hybrid's own refusals; it counts only when the signature covers it.
REFUSAL_HEADER = signatures.REFUSAL_HEADER


# --- exceptions --------------------------------------------------------------------------------
class HybridClientError(requests.RequestException):
    """Base of every flask-hybrid failure the client raises.

    ``code`` is the error-table code (or ``invalid_signature`` / ``invalid_response`` for checks
    the client makes itself), ``status`` the HTTP status of the response involved (``None``
    when there is none) and ``response`` that response. ``verified`` is True for a refusal
    whose RFC 9421 signature was verified, is bound to the request it answers and covers
    ``X-Hybrid-Refusal`` naming its code: only such a refusal proves that the app did not run
    the request (and only it is retried).
    """

    code: str = "hybrid_error"

    def __init__(self, message: str = "", *, response: requests.Response | None = None) -> None:
        super().__init__(message or self.code, response=response)
        self.status: int | None = None if response is None else response.status_code
        self.verified = False


class InvalidPayloadError(HybridClientError):
    code = errors.InvalidPayload.error


class InvalidSessionError(HybridClientError):
    code = errors.InvalidSession.error


class UnknownKeyError(HybridClientError):
    """The server knows no such key, or the pinned kid is not among the server's keys."""

    code = errors.UnknownKey.error


class ReplayedRequestError(HybridClientError):
    code = errors.ReplayedRequest.error


class PayloadTooLargeError(HybridClientError):
    code = errors.PayloadTooLarge.error


class EncryptionRequiredError(HybridClientError):
    code = errors.EncryptionRequired.error


class RateLimitedError(HybridClientError):
    """Over a rate limit; ``retry_after`` is in seconds (``None`` when the server said none)."""

    code = errors.RateLimited.error

    def __init__(
        self,
        message: str = "",
        *,
        response: requests.Response | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, response=response)
        self.retry_after = retry_after


class StoreUnavailableError(HybridClientError):
    code = errors.StoreUnavailable.error


class KeyConfigMismatchError(HybridClientError):
    """Format H: the server holds no key the request was sealed to (its 422 problem).

    The client has refetched ``/.well-known/hpke-keys`` already; it resends by itself once when
    the body can be sent again (bytes, str, ``json=``), and raises this for a streamed body.
    """

    code = errors.KeyConfigMismatch.error


class SignatureError(HybridClientError):
    """An answer that must carry a signature bound to its request has none, or a bad one.

    Raised for a refusal, a handshake answer, a bodiless answer to a sealed request or a
    plaintext format E answer without a valid RFC 9421 signature covering this request. The
    request may have reached the app: it is never retried.
    """

    code = "invalid_signature"


class ResponseError(HybridClientError):
    """A response that should be sealed (or is a key set or handshake) and does not open."""

    code = "invalid_response"


_REFUSALS: dict[str, type[HybridClientError]] = {
    cls.code: cls
    for cls in (
        InvalidPayloadError,
        InvalidSessionError,
        UnknownKeyError,
        ReplayedRequestError,
        PayloadTooLargeError,
        EncryptionRequiredError,
        RateLimitedError,
        KeyConfigMismatchError,
        StoreUnavailableError,
    )
}
_REFUSAL_STATUSES = {code: errors.ERRORS[code].code for code in _REFUSALS}


# --- response helpers ---------------------------------------------------
def _retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` in seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


def _refusal(response: requests.Response, now: float) -> HybridClientError | None:
    """The exception for a flask-hybrid refusal, or ``None`` when the response is not one.

    A refusal is unsealed JSON ``{"error": code, ...}`` whose status is that code's status.
    """
    if response.status_code not in _REFUSAL_STATUSES.values():
        return None
    try:
        body = loads_json_object(response.content)
    except InvalidPayload:
        return None
    code = body.get("error")
    if not isinstance(code, str) or _REFUSAL_STATUSES.get(code) != response.status_code:
        return None
    message = body.get("message")
    text = f"{code} ({response.status_code})"
    if isinstance(message, str):
        text = f"{text}: {message}"
    if code == RateLimitedError.code:
        retry_after = _retry_after(response.headers.get("Retry-After"), now)
        return RateLimitedError(text, response=response, retry_after=retry_after)
    return _REFUSALS[code](text, response=response)


def _is_json_type(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    return media_type == _JSON or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


def _decode_content(plaintext: bytes, encoding: str | None) -> tuple[bytes, str | None]:
    """Undo the app's own ``Content-Encoding`` (sent as ``X-Plaintext-Content-Encoding``)."""
    name = (encoding or "").strip().lower()
    if name in ("", "identity"):
        return plaintext, None
    if name in ("gzip", "x-gzip", "deflate"):
        try:
            return zlib.decompress(plaintext, zlib.MAX_WBITS | 32), None  # gzip or zlib header
        except zlib.error:
            if name == "deflate":
                try:
                    return zlib.decompress(plaintext, -zlib.MAX_WBITS), None
                except zlib.error:
                    pass
    return plaintext, encoding  # unknown: give the bytes back with their encoding named


def _restore(response: requests.Response, plaintext: bytes, content_type: str | None) -> None:
    """Make a sealed response look like the app's: plaintext body, its headers."""
    headers = response.headers
    plaintext, encoding = _decode_content(
        plaintext, headers.pop("X-Plaintext-Content-Encoding", None)
    )
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    if content_type is None:
        headers.pop("Content-Type", None)
    else:
        headers["Content-Type"] = content_type
    headers.pop("X-Plaintext-Content-Type", None)
    headers.pop("X-Encryption-Enabled", None)
    headers.pop("Content-Digest", None)  # it described the sealed body
    if "Content-Length" in headers or "Transfer-Encoding" not in headers:
        headers["Content-Length"] = str(len(plaintext))
    response._content = plaintext
    response.encoding = get_encoding_from_headers(headers)


# --- request-bound response signatures (RFC 9421) -------------------------------------------
#: The RFC 9530 ``Content-Digest`` value of a body as sent: ``sha-256=:<b64>:``.
content_digest = signatures.content_digest
#: A request as it went on the wire (method, exactly the headers sent, URL), which an answer's
#: signature must be bound to.
SentRequest = signatures.AnsweredRequest
#: What a verified signature says: the signing kid and the covered ``X-Hybrid-Refusal`` code.
VerifiedSignature = signatures.VerifiedAnswer


def verify_response_signature(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    request: SentRequest,
    keys: Mapping[str, rsa.PublicKey] | Callable[[str], rsa.PublicKey | None],
    *,
    cek: bytes | None = None,
) -> VerifiedSignature:
    """Check that an answer carries flask-hybrid's RFC 9421 signature bound to ``request``.

    :func:`flask_hybrid.core.signatures.verify_response`, raising :class:`SignatureError`::

        sent = SentRequest("POST", [("Content-Digest", content_digest(body))])
        verified = verify_response_signature(401, headers, response.content, sent, keys)
        verified.kid, verified.refusal  # e.g. ("cHGR83zg…", "unknown_key")
    """
    try:
        return signatures.verify_response(
            keys, status=status, headers=headers, body=body, request=request, cek=cek
        )
    except signatures.InvalidSignature as error:
        raise SignatureError(f"the response signature does not verify: {error}") from None


def _sent_request(prepared: requests.PreparedRequest | None) -> SentRequest | None:
    """What requests recorded as sent (the prepared request of the response)."""
    if prepared is None or prepared.method is None or prepared.url is None:
        return None
    headers = [
        (name, value.decode("latin-1") if isinstance(value, bytes) else str(value))
        for name, value in prepared.headers.items()
    ]
    return SentRequest(prepared.method, headers, prepared.url)


def _is_bodiless(response: requests.Response) -> bool:
    """An answer without a body: 1xx, 204, 205, 304, or simply empty."""
    status = response.status_code
    return 100 <= status < 200 or status in _BODILESS_STATUSES or not response.content


def _key_sets(body: bytes) -> tuple[dict[str, rsa.PublicKey], dict[str, rsa.PublicKey]]:
    """The encryption keys and the signing keys of a JWK Set, by RFC 7638 kid, in order.

    Entries marked ``"use": "enc"`` / ``"sig"`` go to one list each (a key that does both is
    listed twice); a set that marks no entry is a server that signs with its identity keys, and
    every key goes to both. Raises :class:`InvalidPayload` when there is no usable key at all.
    """
    key_sets: list[dict[str, rsa.PublicKey]] = []
    for use in ("enc", "sig"):
        try:
            key_sets.append(parse_jwks(body, use=use))
        except InvalidPayload:
            key_sets.append({})
    encryption_keys, signing_keys = key_sets
    if not encryption_keys and not signing_keys:
        raise InvalidPayload
    return encryption_keys, signing_keys


# --- format H (EHBP) helpers -------------------------------------------------------------------
_EHBP_HEADERS = (ehbp.ENCAPSULATED_KEY_HEADER, ehbp.RESPONSE_NONCE_HEADER)


def _ehbp_body_source(
    data: Any, json: Any, headers: CaseInsensitiveDict[Any]
) -> tuple[Iterable[bytes], bool]:
    """The plaintext body as chunks, and whether it can be sent again (for the 422 retry)."""
    if data is not None and json is not None:
        raise ValueError("pass json= or data=, not both")
    if json is not None:
        headers["Content-Type"] = _JSON
        body = jsonlib.dumps(json, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        return (body.encode("utf-8"),), True
    if data is None:
        return (), True
    if isinstance(data, str):
        return (data.encode("utf-8"),), True
    if isinstance(data, (bytes, bytearray, memoryview)):
        return (bytes(data),), True
    read = getattr(data, "read", None)
    if callable(read):
        return iter(lambda: read(ehbp.FRAME_SIZE), b""), False
    if isinstance(data, Iterable) and not isinstance(data, Mapping):
        return iter(data), False
    raise TypeError("data= must be bytes, str, an iterable of bytes or a binary file")


def _first_nonempty(chunks: Iterable[bytes]) -> Iterator[bytes] | None:
    """The chunks from the first non-empty one on, or ``None`` when there is no byte at all."""
    iterator = iter(chunks)
    for chunk in iterator:
        if len(chunk):
            return _chained(chunk, iterator)
    return None


def _chained(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    yield first
    yield from rest


def _sealed_frames(sealer: ehbp.RequestSealer, chunks: Iterable[bytes]) -> Iterator[bytes]:
    """64 KiB frames, sealed as the source is read: one frame of plaintext held at a time."""
    pending = bytearray()
    for chunk in chunks:
        if not isinstance(chunk, (bytes, bytearray, memoryview)):
            raise TypeError("a streamed body yields bytes")
        pending += chunk
        whole = len(pending) - len(pending) % ehbp.FRAME_SIZE
        if whole:
            yield sealer.seal(memoryview(pending)[:whole])
            del pending[:whole]
    if pending:
        yield sealer.seal(bytes(pending))


def _is_key_config_problem(status: int, headers: Mapping[str, str], body: bytes) -> bool:
    """EHBP's 422 ``application/problem+json`` of type ``...:error:key-config``."""
    media_type = headers.get("Content-Type", "").partition(";")[0].strip().lower()
    if status != 422 or media_type != "application/problem+json":
        return False
    try:
        problem = loads_json_object(body)
    except InvalidPayload:
        return False
    return problem.get("type") == ehbp.KEY_CONFIG_PROBLEM_TYPE


class _OpenedBody:
    """Stands in for ``response.raw``: the sealed frames opened as they arrive.

    ``requests`` reads a raw body through its ``stream()``, so ``response.iter_content(None)``
    yields each authenticated frame's plaintext as soon as it is whole, and ``.content`` all of
    them. A frame that does not open (or a body cut inside a frame) raises
    :class:`ResponseError`, after the frames before it and never any byte of it.
    """

    def __init__(self, raw: Any, opener: ehbp.ResponseOpener, response: requests.Response) -> None:
        self._raw = raw
        self._opener = opener
        self._response = response
        self.headers = raw.headers

    def stream(self, chunk_size: int | None = None, decode_content: bool = True) -> Iterator[bytes]:
        try:
            for data in self._raw.stream(ehbp.FRAME_SIZE, decode_content=False):
                yield from self._opener.feed(data)
            self._opener.finish()
        except InvalidPayload:
            raise ResponseError(
                "the sealed response does not open", response=self._response
            ) from None

    def read(self, amt: int | None = None) -> bytes:  # for callers that read raw directly
        return b"".join(self.stream())

    def close(self) -> None:
        self._raw.close()

    def release_conn(self) -> None:
        release = getattr(self._raw, "release_conn", None)
        if release is not None:
            release()


# --- state -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Session:
    """A format S session as the handshake gave it."""

    token: str = field(repr=False)
    public_key: rsa.PublicKey = field(repr=False)
    session_id: str
    renew_at: float


@dataclass(frozen=True)
class _KeySet:
    """The server's keys from ``jwks.json``: to encrypt to (J, E) and to verify signatures."""

    encryption: dict[str, rsa.PublicKey] = field(repr=False)
    signing: dict[str, rsa.PublicKey] = field(repr=False)


class _SigningKeyLookup:
    """Signing keys by kid for one verification; notes a kid it lacks (worth one refetch)."""

    def __init__(self, keys: Mapping[str, rsa.PublicKey], pinned_kid: str | None) -> None:
        self._keys, self._pinned_kid = keys, pinned_kid
        self.missing = False

    def __call__(self, kid: str) -> rsa.PublicKey | None:
        if self._pinned_kid is not None and kid != self._pinned_kid:
            return None  # no refetch: no key set makes another kid acceptable
        key = self._keys.get(kid)
        self.missing = key is None
        return key


@dataclass(frozen=True)
class _ReusedKey:
    """One CEK kept for a session (S) or an identity key (J), with its wrapped form."""

    owner: str  # the session id or kid it is wrapped to
    cek: bytes = field(repr=False)
    wrapped_key: bytes = field(repr=False)


@dataclass(frozen=True)
class _Exchange:
    """What one sent request expects of its answer."""

    kind: Literal["sealed", "signed", "plain", "head"]
    cek: bytes | None = field(default=None, repr=False)
    jti: str | None = None  # J: the request's jti, which the answer must name
    session_id: str | None = None  # S: the session the request went out under


# --- the session -------------------------------------------------------------------------------
class HybridSession(requests.Session):
    """A :class:`requests.Session` that encrypts request bodies and opens sealed responses.

    :param base_url: the server's origin (and optional path prefix); request URLs are relative
        to it, and an absolute URL must share its origin.
    :param format: ``"jwe"`` (format J), ``"session"`` (format S), ``"envelope"`` (format E)
        or ``"ehbp"`` (format H, EHBP: HPKE to ``/.well-known/hpke-keys`` at the origin's root;
        ``data=`` may be bytes, str, an iterable of bytes or a binary file, sealed as 64 KiB
        frames while it is read and sent chunked; with ``stream=True`` the answer's frames are
        opened as they arrive, ``response.iter_content(None)`` yielding each authenticated
        frame; the 422 key-config problem refetches the key and resends once when the body is
        bytes, str or ``json=``. EHBP binds no method, path or time and has no replay
        protection, and a bodiless request and its answer are plaintext; signatures, sessions
        and ``Content-Digest`` are not used. ``pinned_kid`` is then the server's X25519 public
        key in hex.)
    :param device_id: the S device id (default: a random one).
    :param reuse_key: S and J: one CEK (one wrapped key) for many requests, fresh IV and jti.
        A bodiless S request still wraps a fresh CEK, so its ``X-Encrypted-Aes-Key`` (which its
        answer's signature covers) is unique.
    :param pinned_kid: trust only the identity key with this RFC 7638 kid: J and E encrypt to
        it. A kid missing from the server's encryption keys raises :class:`UnknownKeyError`.
    :param pinned_signing_kid: accept response signatures by this signing key only (default:
        ``pinned_kid``; set it when the server signs with a separate key). A kid missing from
        the server's signing keys raises :class:`UnknownKeyError`; a signature by another key,
        :class:`SignatureError`.
    :param envelope_padding: E: ``"oaep"`` (OAEP-256 over the raw CEK) or ``"pkcs1v15"``
        (JSEncrypt's PKCS#1 v1.5 over the b64(CEK) text).
    :param encrypt_response: E: ask for sealed responses (``X-Encrypt-Response: true``); when
        False the plaintext responses must carry a valid signature.
    :param verify_signatures: require the RFC 9421 signature bound to the request on every
        answer that is not sealed under its key: refusals, handshakes, bodiless answers to
        sealed requests, plaintext E answers. With False nothing is verified, and refusals
        are raised but never retried (an unverified refusal may be a proxy's).
    :param clock: seconds since the epoch (J ``iat``, session expiry, ``Retry-After`` dates).
    :param prefix: the blueprint's URL prefix.

    Every request carries ``Content-Digest: sha-256=:…:`` of its body as sent (of ``b""``
    when it has none). An automatic retry (new key set on ``unknown_key``, new handshake on
    ``invalid_session``) happens at most once, and only after a verified refusal; anything
    else is raised, so a non-idempotent request is never sent twice on an unproven answer.
    ``X-Response-Signature`` (kept by the server for JSEncrypt clients) is not used.

    Redirects are returned, never followed (a redirected request would leave unencrypted);
    ``files=`` is refused (multipart bodies are never encrypted). HEAD requests carry the key
    like GET, but their answer has no body to open and is returned as it came, unchecked.
    Format E has no bodiless form: a request without a body is sent as it is, and its answer
    is returned unchecked (a refusal to it is raised, never retried).
    """

    def __init__(
        self,
        base_url: str,
        *,
        format: Format = "jwe",
        device_id: str | None = None,
        reuse_key: bool = False,
        pinned_kid: str | None = None,
        pinned_signing_kid: str | None = None,
        envelope_padding: EnvelopePadding = "oaep",
        encrypt_response: bool = True,
        verify_signatures: bool = True,
        clock: Callable[[], float] = time.time,
        prefix: str = "/hybrid",
    ) -> None:
        super().__init__()
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise ValueError("base_url must be an http(s) URL without a query")
        if format not in _FORMATS:
            raise ValueError(f"format must be one of {', '.join(_FORMATS)}")
        if envelope_padding not in _PADDINGS:
            raise ValueError("envelope_padding must be 'oaep' or 'pkcs1v15'")
        if not prefix.startswith("/"):
            raise ValueError("prefix must start with '/'")
        if device_id is None:
            device_id = f"py-{secrets.token_hex(16)}"
        try:
            formats.parse_device_id(device_id)
        except InvalidPayload:
            raise ValueError("device_id must be 1 to 128 printable ASCII characters") from None
        self.base_url = base_url.rstrip("/")
        self.format: Format = format
        self.device_id = device_id
        self.reuse_key = reuse_key
        self.pinned_kid = pinned_kid
        self.pinned_signing_kid = (
            pinned_signing_kid if pinned_signing_kid is not None else pinned_kid
        )
        self.envelope_padding: EnvelopePadding = envelope_padding
        self.encrypt_response = encrypt_response
        self.verify_signatures = verify_signatures
        self.prefix = prefix.rstrip("/")
        self._clock = clock
        self._lock = threading.RLock()
        self._key_set: _KeySet | None = None
        self._session: _Session | None = None
        self._reused_key: _ReusedKey | None = None
        self._hpke_config: hpke.KeyConfig | None = None

    def __repr__(self) -> str:
        state = "open" if self._session is not None else "none"
        return f"<HybridSession {self.base_url!r} format={self.format!r} session={state}>"

    @property
    def session_id(self) -> str | None:
        """The current format S session id, if a session is established."""
        session = self._session
        return None if session is None else session.session_id

    # -- the requests API ----------------------------------------------------------------------
    def request(
        self,
        method: str | bytes,
        url: str | bytes,
        params: Any = None,
        data: Any = None,
        headers: Mapping[str, str | bytes | None] | None = None,
        cookies: Any = None,
        files: Any = None,
        auth: Any = None,
        timeout: Any = None,
        allow_redirects: bool = True,
        proxies: Any = None,
        hooks: Any = None,
        stream: bool | None = None,
        verify: Any = None,
        cert: Any = None,
        json: Any = None,
    ) -> requests.Response:
        """Send one request encrypted in this session's format; see :class:`requests.Session`.

        Only ``json=`` or ``data=`` (bytes or str) bodies; the content type is the
        ``Content-Type`` header's, else JSON. The response is fully read (``stream`` is ignored)
        and redirects are not followed (``allow_redirects`` is ignored).
        """
        if files is not None:
            raise ValueError("multipart bodies are never encrypted: files= is not supported")
        method = (method.decode("ascii") if isinstance(method, bytes) else method).upper()
        url = self._absolute_url(url.decode("ascii") if isinstance(url, bytes) else url)
        request_headers = CaseInsensitiveDict(headers or {})
        if self.format == "ehbp":
            return self._request_ehbp(
                method,
                url,
                data,
                json,
                request_headers,
                {"params": params, "cookies": cookies, "auth": auth, "hooks": hooks},
                {"timeout": timeout, "proxies": proxies, "verify": verify, "cert": cert},
                stream=bool(stream),
            )
        user_content_type = request_headers.pop("Content-Type", None)
        body, content_type = self._plaintext(data, json, user_content_type)
        transport = {"timeout": timeout, "proxies": proxies, "verify": verify, "cert": cert}
        for attempt in (1, 2):
            prepared, exchange = self._prepare(
                method,
                url,
                body,
                content_type,
                request_headers,
                {"params": params, "cookies": cookies, "auth": auth, "hooks": hooks},
                transport,
            )
            response_hooks, prepared.hooks = prepared.hooks, default_hooks()
            settings = self.merge_environment_settings(
                prepared.url, proxies or {}, False, verify, cert
            )
            send_kwargs = {"timeout": timeout, **settings}
            response = self.send(prepared, allow_redirects=False, **send_kwargs)
            try:
                response = self._finish(response, exchange, transport)
            except InvalidSessionError as refusal:
                # Only a refusal signed for this very request proves the app never ran it.
                if self.format != "session" or attempt == 2 or not refusal.verified:
                    raise
                logger.debug("flask-hybrid: session refused, handshaking again")
                self._drop_session(exchange.session_id)
                continue
            except UnknownKeyError as refusal:
                if self.format == "session" or attempt == 2 or not refusal.verified:
                    raise
                logger.debug("flask-hybrid: key unknown to the server, refetching the keys")
                self._fetch_keys(transport)
                continue
            return dispatch_hook("response", response_hooks, response, **send_kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        """End the session server side (``DELETE``) when there is one, then close the pools."""
        with self._lock:
            session, self._session, self._reused_key = self._session, None, None
        if session is not None:
            try:
                super().request(
                    "DELETE",
                    self._endpoint("session"),
                    headers={
                        "Authorization": f"Bearer {session.token}",
                        "X-Device-Id": self.device_id,
                        "Content-Digest": content_digest(b""),
                    },
                    allow_redirects=False,
                    timeout=_CLOSE_TIMEOUT,
                )
            except requests.RequestException:
                logger.debug("flask-hybrid: could not end the session server side")
        super().close()

    # -- building requests ---------------------------------------------------------------------
    def _absolute_url(self, url: str) -> str:
        if "://" not in url:
            return f"{self.base_url}/{url.lstrip('/')}"
        if urlsplit(url)[:2] != urlsplit(self.base_url)[:2]:
            raise ValueError("HybridSession only sends to its base_url's origin")
        return url

    def _endpoint(self, name: str) -> str:
        return f"{self.base_url}{self.prefix}/{name}"

    def _plaintext(
        self, data: Any, json: Any, content_type: str | bytes | None
    ) -> tuple[bytes | None, str]:
        """The body to encrypt (``None`` for none) and its content type."""
        if data is not None and json is not None:
            raise ValueError("pass json= or data=, not both")
        if isinstance(content_type, bytes):
            content_type = content_type.decode("latin-1")
        if json is not None:
            body = jsonlib.dumps(
                json, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            ).encode("utf-8")
            content_type = _JSON
        elif data is None:
            body = None
        elif isinstance(data, (bytes, bytearray, memoryview)):
            body = bytes(data)
        elif isinstance(data, str):
            body = data.encode("utf-8")
        else:
            raise TypeError("data= must be bytes or str; use json= for JSON values")
        content_type = content_type or _JSON
        if not body:
            return None, content_type
        if self.format != "jwe" and not _is_json_type(content_type):
            raise ValueError(f"format {self.format!r} carries JSON bodies only")
        if _is_json_type(content_type):
            try:
                loads_json(body)
            except InvalidPayload:
                raise ValueError("the body is declared JSON but is not strict UTF-8 JSON") from None
        return body, content_type

    def _prepare(
        self,
        method: str,
        url: str,
        body: bytes | None,
        content_type: str,
        headers: CaseInsensitiveDict[Any],
        extra: dict[str, Any],
        transport: dict[str, Any],
    ) -> tuple[requests.PreparedRequest, _Exchange]:
        """The wire request of one attempt, and what its answer must be."""
        wire_headers: CaseInsensitiveDict[Any] = CaseInsensitiveDict(headers)
        target = ""
        if self.format == "session":
            wire_body, exchange = self._seal_session(body, wire_headers, transport)
        elif self.format == "jwe":
            params = merge_setting(extra["params"], self.params)
            target = requests.Request(method, url, params=params).prepare().path_url
            wire_body, exchange = self._seal_jwe(
                method, target, body, content_type, wire_headers, transport
            )
        else:
            wire_body, exchange = self._seal_envelope(body, wire_headers, transport)
        if wire_body is not None and "Content-Type" not in wire_headers:
            wire_headers["Content-Type"] = _JSON
        # What the answer's signature is bound to (it replaces any digest the caller gave).
        wire_headers["Content-Digest"] = content_digest(wire_body or b"")
        if method == "HEAD":
            exchange = _Exchange("head")
        prepared = self.prepare_request(
            requests.Request(method, url, headers=wire_headers, data=wire_body, **extra)
        )
        if self.format == "jwe" and prepared.path_url != target:
            raise RuntimeError("requests prepared another target than the one bound in htu")
        return prepared, exchange

    def _seal_session(
        self, body: bytes | None, headers: CaseInsensitiveDict[Any], transport: dict[str, Any]
    ) -> tuple[bytes | None, _Exchange]:
        """Format S: the session headers, and the body sealed (or the key in a header)."""
        session = self._current_session(transport)
        headers["Authorization"] = f"Bearer {session.token}"
        headers["X-Device-Id"] = self.device_id
        headers["X-Encryption-Enabled"] = "true"
        if body is None:
            # Never the reused key: the wrapped key is all that makes this request unique, and
            # the answer's signature is bound to it.
            cek = aead.new_cek()
            headers["X-Encrypted-Aes-Key"] = b64encode(rsa.wrap_oaep(session.public_key, cek))
            return None, _Exchange("sealed", cek, session_id=session.session_id)
        cek, wrapped_key = self._key_for(session.session_id, session.public_key)
        exchange = _Exchange("sealed", cek, session_id=session.session_id)
        return formats.seal_session_request(cek, wrapped_key, body), exchange

    def _seal_jwe(
        self,
        method: str,
        target: str,
        body: bytes | None,
        content_type: str,
        headers: CaseInsensitiveDict[Any],
        transport: dict[str, Any],
    ) -> tuple[bytes | None, _Exchange]:
        """Format J: a JWE bound to method, target, time and a fresh jti."""
        kid, public_key = self._encryption_key(transport)
        cek, wrapped_key = self._key_for(kid, public_key)
        jti = b64url_encode(os.urandom(_JTI_BYTES))
        header: dict[str, Any] = {
            "alg": jwe.ALG_RSA_OAEP_256,
            "enc": jwe.ENC_A256GCM,
            "kid": kid,
            "htm": method,
            "htu": target,
            "iat": int(self._clock()),
            "jti": jti,
        }
        if body is not None:
            media_type = content_type.partition(";")[0].strip().lower()
            header["cty"] = "json" if media_type == _JSON else content_type
        token = jwe.encrypt(header, body or b"", cek, encrypted_key=wrapped_key)
        exchange = _Exchange("sealed", cek, jti)
        if body is None:
            headers["X-Hybrid-JWE"] = token
            return None, exchange
        headers["Content-Type"] = _JOSE
        return token.encode("ascii"), exchange

    def _seal_envelope(
        self, body: bytes | None, headers: CaseInsensitiveDict[Any], transport: dict[str, Any]
    ) -> tuple[bytes | None, _Exchange]:
        """Format E: a fresh CEK wrapped to an identity key (no bodiless form: sent as is)."""
        if body is None:
            return None, _Exchange("plain")
        kid, public_key = self._encryption_key(transport)
        cek = aead.new_cek()
        alg, wrapped_key = formats.wrap_envelope_key(public_key, cek, padding=self.envelope_padding)
        headers["X-Encryption-Enabled"] = "true"
        if self.encrypt_response:
            headers["X-Encrypt-Response"] = "true"
        exchange = _Exchange("sealed" if self.encrypt_response else "signed", cek)
        return formats.seal_envelope_request(alg, wrapped_key, cek, body, kid=kid), exchange

    def _key_for(self, owner: str, public_key: rsa.PublicKey) -> tuple[bytes, bytes]:
        """A CEK and its OAEP-256 wrap to ``public_key``: kept per owner when reusing."""
        with self._lock:
            reused = self._reused_key
            if self.reuse_key and reused is not None and reused.owner == owner:
                return reused.cek, reused.wrapped_key
            cek = aead.new_cek()
            wrapped_key = rsa.wrap_oaep(public_key, cek)
            if self.reuse_key:
                self._reused_key = _ReusedKey(owner, cek, wrapped_key)
            return cek, wrapped_key

    # -- answers -------------------------------------------------------------------------------
    def _finish(
        self, response: requests.Response, exchange: _Exchange, transport: dict[str, Any]
    ) -> requests.Response:
        """Raise for a refusal, require a bound signature where nothing is sealed, open the rest.

        ``response.request`` (what requests sent) is what a signature must be bound to.
        """
        if exchange.kind == "head":
            return response
        refusal = _refusal(response, self._clock())
        if exchange.kind == "plain":
            if refusal is not None:
                raise refusal  # to an unencrypted request: unsigned, never acted on
            return response
        unsealed = refusal is not None or exchange.kind == "signed" or _is_bodiless(response)
        marked: str | None = response.headers.get(REFUSAL_HEADER)
        if unsealed and self.verify_signatures:
            # Nothing sealed vouches for this answer (a proxy may have dropped the real one).
            # An answer of the app is bound by an HMAC under this request's CEK; a refusal (the
            # server may not have opened the request) by the signing key.
            marked = self._require_bound_signature(response, transport, cek=exchange.cek).refusal
        elif self.format == "session" and self.reuse_key and self.verify_signatures:
            # S's seal names no request, and this CEK sealed earlier answers too: an earlier one
            # would open. The server binds S's sealed answers to their request (PROTOCOL.md).
            self._require_bound_signature(response, transport, cek=exchange.cek)
        if refusal is not None:
            if marked == refusal.code:
                refusal.verified = self.verify_signatures
                raise refusal
            if exchange.kind != "signed":
                raise refusal  # not marked as flask-hybrid's: raised, never acted on
            # A plaintext E answer of the app that merely looks like a refusal.
        if unsealed:
            return response
        plaintext, content_type = self._open_sealed(response, exchange)
        _restore(response, plaintext, content_type)
        return response

    def _open_sealed(
        self, response: requests.Response, exchange: _Exchange
    ) -> tuple[bytes, str | None]:
        cek = exchange.cek
        assert cek is not None
        try:
            if self.format == "jwe":
                assert exchange.jti is not None
                header, plaintext = formats.open_response(
                    response.content.decode("ascii"), cek, request_jti=exchange.jti
                )
                status = header.get("status")
                if isinstance(status, bool) or status != response.status_code:
                    raise InvalidPayload
                cty = header.get("cty")
                return plaintext, cty if isinstance(cty, str) else None
            if self.format == "session":
                plaintext = formats.open_session_response(response.content, cek)
            else:
                plaintext = formats.open_envelope_response(response.content, cek)
        except (InvalidPayload, UnicodeDecodeError):
            raise ResponseError("the sealed response does not open", response=response) from None
        return plaintext, response.headers.get("X-Plaintext-Content-Type")

    def _require_bound_signature(
        self, response: requests.Response, transport: dict[str, Any], *, cek: bytes | None = None
    ) -> VerifiedSignature:
        """The RFC 9421 signature, bound to the request sent, or :class:`SignatureError`.

        A signature by a kid the key set lacks gets one refetch of the keys (the server may
        have rotated); a kid other than ``pinned_signing_kid`` never resolves. With ``cek``
        (format S), the HMAC under that CEK's answer key counts too.
        """
        sent = _sent_request(response.request)
        if sent is None:
            raise SignatureError(
                "no record of the request to bind the answer to", response=response
            )
        key_set = self._keys(transport)  # key I/O stays outside the library's verify()
        for refetched in (False, True):
            lookup = _SigningKeyLookup(key_set.signing, self.pinned_signing_kid)
            try:
                return verify_response_signature(
                    response.status_code, response.headers, response.content, sent, lookup, cek=cek
                )
            except SignatureError as error:
                if refetched or not lookup.missing:
                    raise SignatureError(str(error), response=response) from None
            logger.debug("flask-hybrid: signature by an unknown key, refetching the keys")
            key_set = self._fetch_keys(transport)
        raise AssertionError("unreachable")  # pragma: no cover

    # -- keys ----------------------------------------------------------------------------------
    def _fetch_keys(self, transport: dict[str, Any]) -> _KeySet:
        """GET the JWK Set (again) and keep it; the pinned kids must be in it."""
        response = super().request(
            "GET", self._endpoint("jwks.json"), allow_redirects=False, **transport
        )
        refusal = _refusal(response, self._clock())
        if refusal is not None:
            raise refusal  # unsigned (a key set is not signed): never retried
        try:
            if response.status_code != 200:
                raise InvalidPayload
            encryption_keys, signing_keys = _key_sets(response.content)
        except InvalidPayload:
            raise ResponseError("the server's key set is not usable", response=response) from None
        if self.pinned_kid is not None and self.pinned_kid not in encryption_keys:
            raise UnknownKeyError(
                "the pinned kid is not among the server's keys", response=response
            )
        pinned_signing_kid = self.pinned_signing_kid
        if (
            self.verify_signatures
            and pinned_signing_kid is not None
            and pinned_signing_kid not in signing_keys
        ):
            raise UnknownKeyError(
                "the pinned signing kid is not among the server's signing keys", response=response
            )
        key_set = _KeySet(encryption_keys, signing_keys)
        with self._lock:
            self._key_set = key_set
        return key_set

    def _keys(self, transport: dict[str, Any]) -> _KeySet:
        with self._lock:
            key_set = self._key_set
            return key_set if key_set is not None else self._fetch_keys(transport)

    def _encryption_key(self, transport: dict[str, Any]) -> tuple[str, rsa.PublicKey]:
        """The pinned identity key, else the current one (first in the key set)."""
        keys = self._keys(transport).encryption
        if not keys:
            raise ResponseError("the server's key set has no encryption key")
        kid = self.pinned_kid if self.pinned_kid is not None else next(iter(keys))
        return kid, keys[kid]

    # -- format H (EHBP) -----------------------------------------------------------------------
    def _request_ehbp(
        self,
        method: str,
        url: str,
        data: Any,
        json: Any,
        headers: CaseInsensitiveDict[Any],
        extra: dict[str, Any],
        transport: dict[str, Any],
        *,
        stream: bool,
    ) -> requests.Response:
        """Format H: the body sealed to the server's HPKE key as 64 KiB frames, sent chunked;
        the answer's frames opened as they arrive (``stream=True``: read them with
        ``response.iter_content(None)``, one authenticated frame at a time)."""
        for name in ("Content-Length", "Transfer-Encoding", *_EHBP_HEADERS):
            headers.pop(name, None)
        source, replayable = _ehbp_body_source(data, json, headers)
        for attempt in (1, 2):
            config = self._ehbp_key_config(transport, refetch=False)
            body: Iterator[bytes] | None = None
            sealer: ehbp.RequestSealer | None = None
            first = _first_nonempty(source)  # a replayable source is a tuple: read afresh
            wire_headers = CaseInsensitiveDict(headers)
            if first is not None:  # a bodiless request goes as it is (EHBP's §7.4): plaintext
                sealer = ehbp.RequestSealer(config.public_key)
                wire_headers[ehbp.ENCAPSULATED_KEY_HEADER] = sealer.header_value
                body = _sealed_frames(sealer, first)
            prepared = self.prepare_request(
                requests.Request(method, url, headers=wire_headers, data=body, **extra)
            )
            response_hooks, prepared.hooks = prepared.hooks, default_hooks()
            settings = self.merge_environment_settings(
                prepared.url,
                transport["proxies"] or {},
                True,
                transport["verify"],
                transport["cert"],
            )
            send_kwargs = {"timeout": transport["timeout"], **settings}
            response = self.send(prepared, allow_redirects=False, **send_kwargs)
            if sealer is None:
                return dispatch_hook("response", response_hooks, response, **send_kwargs)
            try:
                response = self._finish_ehbp(response, sealer, stream=stream)
            except KeyConfigMismatchError:
                logger.debug("flask-hybrid: HPKE key unknown to the server, refetching the keys")
                self._ehbp_key_config(transport, refetch=True)
                if attempt == 2 or not replayable:
                    raise
                continue
            return dispatch_hook("response", response_hooks, response, **send_kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

    def _finish_ehbp(
        self, response: requests.Response, sealer: ehbp.RequestSealer, *, stream: bool
    ) -> requests.Response:
        """Open a sealed answer, raise for a refusal, fail closed on an unsealed 2xx.

        As EHBP says: an answer with ``Ehbp-Response-Nonce`` is opened whatever its status; one
        without it is a failure when 2xx (a proxy may have swapped the body) and otherwise is
        returned as an unauthenticated plaintext error (flask-hybrid's own refusals raised).
        """
        nonces = response.raw.headers.getlist(ehbp.RESPONSE_NONCE_HEADER) if response.raw else []
        if not nonces:
            content = response.content
            if _is_key_config_problem(response.status_code, response.headers, content):
                raise KeyConfigMismatchError("key_config_mismatch (422)", response=response)
            refusal = _refusal(response, self._clock())
            if refusal is not None:
                raise refusal  # unsigned: never retried
            if 200 <= response.status_code < 300:
                raise ResponseError(
                    "a 2xx answer to a sealed request is not sealed", response=response
                )
            return response
        try:
            if len(nonces) != 1:
                raise InvalidPayload
            opener = sealer.response_opener(nonces[0])
        except InvalidPayload:
            response.close()
            raise ResponseError("the response nonce is not usable", response=response) from None
        response.raw = _OpenedBody(response.raw, opener, response)
        response.headers.pop("Content-Length", None)  # it counted the sealed bytes
        if not stream:
            response.content  # noqa: B018 - read and open it all now, raising if it fails
        return response

    def _ehbp_key_config(self, transport: dict[str, Any], *, refetch: bool) -> hpke.KeyConfig:
        """The server's ``key_config`` from ``/.well-known/hpke-keys`` at the origin's root."""
        with self._lock:
            config = self._hpke_config
            if config is not None and not refetch:
                return config
        scheme, netloc = urlsplit(self.base_url)[:2]
        response = super().request(
            "GET", f"{scheme}://{netloc}{ehbp.KEYS_PATH}", allow_redirects=False, **transport
        )
        media_type = response.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        try:
            if response.status_code != 200 or media_type != ehbp.KEYS_MEDIA_TYPE:
                raise InvalidPayload
            config = hpke.KeyConfig.parse(response.content)
        except InvalidPayload:
            raise ResponseError(
                "the server's HPKE key config is not usable", response=response
            ) from None
        if self.pinned_kid is not None and config.public_key.hex() != self.pinned_kid.lower():
            raise UnknownKeyError(
                "the pinned HPKE public key is not the server's", response=response
            )
        with self._lock:
            self._hpke_config = config
        return config

    # -- format S sessions ---------------------------------------------------------------------
    def _current_session(self, transport: dict[str, Any]) -> _Session:
        with self._lock:
            session = self._session
            if session is None or self._clock() >= session.renew_at:
                session = self._session = self._handshake(transport)
            return session

    def _drop_session(self, session_id: str | None) -> None:
        """Forget a refused session (unless another thread has already replaced it)."""
        with self._lock:
            if self._session is not None and self._session.session_id == session_id:
                self._session = None

    def _handshake(self, transport: dict[str, Any]) -> _Session:
        """POST the S-form handshake, check its signature, open the sealed 201."""
        if self.verify_signatures:
            self._keys(transport)
        cek = aead.new_cek()
        started = self._clock()
        body = jsonlib.dumps(
            {"aesKey": b64encode(cek), "deviceId": self.device_id}, separators=(",", ":")
        ).encode("ascii")
        response = super().request(
            "POST",
            self._endpoint("session"),
            data=body,
            headers={"Content-Type": _JSON, "Content-Digest": content_digest(body)},
            allow_redirects=False,
            **transport,
        )
        refusal = _refusal(response, self._clock())
        if self.verify_signatures:  # a refusal or the session: either must be for this request
            verified = self._require_bound_signature(response, transport)
            if refusal is not None and verified.refusal == refusal.code:
                refusal.verified = True
        if refusal is not None:
            raise refusal
        try:
            if response.status_code != 201:
                raise InvalidPayload
            document = loads_json_object(formats.open_session_response(response.content, cek))
            token, pem, session_id, expires_in = (
                document.get(name) for name in ("token", "publicKey", "sessionId", "expiresIn")
            )
            if not (isinstance(token, str) and token and isinstance(pem, str)):
                raise InvalidPayload
            if not isinstance(session_id, str) or not session_id:
                raise InvalidPayload
            if isinstance(expires_in, bool) or not isinstance(expires_in, int) or expires_in <= 0:
                raise InvalidPayload
            public_key = rsa.load_public_key(pem)
            if public_key.key_size < rsa.MIN_KEY_BITS:
                raise InvalidPayload
        except (InvalidPayload, ValueError):
            raise ResponseError("the handshake response is not usable", response=response) from None
        logger.debug("flask-hybrid: session %s established", session_id)
        renew_at = started + expires_in - min(_EXPIRY_MARGIN, expires_in / 10)
        return _Session(token, public_key, session_id, renew_at)
