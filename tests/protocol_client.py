"""An independent test-side client of the flask-hybrid wire protocol (formats S, E and J).

Written from ``docs/PROTOCOL.md`` alone. It imports nothing from ``flask_hybrid``: the
point is to hold the server to the contract with a second implementation, not to run our own code
on both ends.

Libraries
---------
* Formats S and E, signatures and keys: ``cryptography`` primitives only (AESGCM, RSA
  OAEP-SHA-256/MGF1-SHA-256, RSAES-PKCS1-v1_5, RSASSA-PKCS1-v1_5 SHA-256).
* Request-bound response signatures (RFC 9421, PROTOCOL.md's section of that name):
  **http-message-signatures** builds the signature base and verifies; the client states what
  must be covered. Every request sends ``Content-Digest`` (RFC 9530, computed here with
  ``hashlib``) of the body exactly as sent; pass ``headers={"Content-Digest": None}`` to leave
  it out, or another value to send a wrong one.
* Format J: **jwcrypto** builds the request JWEs and decrypts the ``dir`` response JWEs.
  jwcrypto's ``JWE`` keeps the content-encryption key in its public ``cek`` attribute:
  ``add_recipient`` wraps whatever ``cek`` already holds (a random one when it is ``None``) and
  leaves the key there afterwards. So the client presets ``token.cek`` when a CEK is given (the
  known-answer vectors, ``reuse_key``) and reads it back otherwise; no hand-built JWE is needed.
  jwcrypto cannot fix the IV, so J requests are checked by decryption (``open_request_jwe``),
  not compared byte for byte. With ``reuse_key`` the same ``ek`` is sent again by putting the
  first encrypted-key segment back in place of the new one. That segment is not part of the AAD,
  and it wraps the same CEK, so the JWE stays valid. This is how a client that caches its
  wrapped key behaves.
  Before jwcrypto sees a response JWE, the client checks it strictly itself: five segments,
  strict b64url, an empty encrypted-key segment, a 12-byte IV and a 16-byte tag, and the header
  profile. jwcrypto decodes b64url leniently and does not check lengths.
  jwcrypto 1.6.1 quirk: it authenticates an empty-payload JWE and then raises "No recipient
  matched". ``_jwcrypto_decrypt`` accepts exactly that case (decryptlog == ["Success"], plaintext
  b"").

Readings of PROTOCOL.md this client makes (where it is not explicit)
--------------------------------------------------------------------
* Body-less "header forms" (S ``X-Encrypted-Aes-Key``, J ``X-Hybrid-JWE``) also send
  ``X-Encryption-Enabled: true``. A body-less request carries no ``Content-Type:
  application/jose``, and PROTOCOL.md treats a request as encrypted only when it has that flag or
  that content type. To test a server without the flag, pass ``headers={"X-Encryption-Enabled":
  None}``.
* J body form sends ``Content-Type: application/jose`` only, not ``X-Encryption-Enabled``. J with
  a session kid adds the identifying S session headers (``Authorization``, ``X-Device-Id``).
* The response IV must differ from the request IV ("fresh IV"). A server that reuses it breaks
  the contract, and the client raises ``ProtocolViolation``.
* A refusal is a status >= 400 response with a JSON object holding a string ``"error"``. For S
  and J it is refused only when unsealed, because the app's own answers come back sealed. For E
  plaintext answers it is a refusal only with an ``X-Hybrid-Refusal`` header (the server marks
  its own refusals so), so an app's plaintext 4xx with an ``"error"`` member comes back as a
  ``Reply``. ``ProtocolError.refusal_marked`` says whether the valid, bound signature covers
  ``X-Hybrid-Refusal`` naming the code (the only refusal a client may act on).
* An unsealed, non-refusal response to an S/J request (or to E with ``X-Encrypt-Response``)
  raises ``ProtocolViolation``. An empty body to HEAD, or with status 204/304, is allowed and
  comes back as ``Reply(sealed=False)``.
* ``Reply.signature_ok`` is ``verify_signature(...)`` (``X-Response-Signature``, kept for
  format E's JSEncrypt clients) for unsealed responses (False when the signature is missing).
  For sealed responses it is ``None`` unless the server signed anyway (policy ``"all"``); then
  it is the check's result.
* ``Reply.message_signature_ok`` (and ``ProtocolError.message_signature_ok``) is the RFC 9421
  check against the request this client sent: ``None`` when the response has no
  ``Signature-Input``, else whether a ``hybrid`` signature (tag ``flask-hybrid``, alg
  ``rsa-v1_5-sha256``, by a key of ``Keys.signing_keys``) covers ``@status``, the response's
  ``Content-Digest`` (matching the body as received), and the request's method,
  ``Content-Digest`` and key header (``X-Hybrid-JWE`` / ``X-Encrypted-Aes-Key``) as sent.
  ``created`` is not compared with the local clock: the binding to a unique request is what
  makes an answer fresh.
* With ``require_message_signatures=True`` (every client class) an answer PROTOCOL.md has the
  server sign (a refusal, a handshake or session answer, a bodiless 204/304 answer to a sealed
  request, a plaintext E answer) without such a valid, bound signature is a
  ``ProtocolViolation``. Off by default, so the building blocks can be driven by fake servers.
* JWKS entries with ``"use": "enc"`` (or no ``use``) are the keys to encrypt to
  (``Keys.public_keys``, current first); ``"use": "sig"`` ones verify signatures
  (``Keys.signing_keys``); a set that marks no entry signs with its identity keys.
  ``X-Response-Signature-Kid`` names a signing key.
* ``Reply.headers`` of a sealed response shows the app's content type as ``Content-Type``
  (from ``X-Plaintext-Content-Type`` for S/E, from ``cty`` for J). ``Reply.raw_headers`` holds
  what travelled.

Errors: ``ProtocolError`` is a flask-hybrid refusal (expected in negative tests).
``ProtocolViolation`` (an ``AssertionError``) means the server broke the contract: a bad
handshake signature, a malformed sealed response, a wrong ``req``/``status`` in a J response, and
so on.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    MappingKeyResolver,
    algorithms,
)
from http_message_signatures import InvalidSignature as InvalidMessageSignature
from jwcrypto import jwe as jwcrypto_jwe
from jwcrypto import jwk as jwcrypto_jwk

__all__ = [
    "CaseInsensitiveDict",
    "EnvelopeClient",
    "HttpTransport",
    "JweClient",
    "Keys",
    "ProtocolError",
    "ProtocolViolation",
    "Reply",
    "SentRequest",
    "SessionClient",
    "Transport",
    "b64",
    "b64_strict",
    "b64url",
    "b64url_strict",
    "content_digest",
    "fetch_keys",
    "flask_transport",
    "http_transport",
    "jwk_thumbprint",
    "open_e_sealed",
    "open_request_jwe",
    "open_response_jwe",
    "open_s_sealed",
    "verify_message_signature",
    "verify_signature",
]

Headers = Mapping[str, str]
Transport = Callable[[str, str, dict[str, str], bytes], tuple[int, Headers, bytes]]
"""(method, target (path+query exactly as sent), headers, body) -> (status, headers, body)."""

DEFAULT_PREFIX = "/hybrid"
CEK_SIZE = 32
IV_SIZE = 12
TAG_SIZE = 16
OAEP_SHA256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
PKCS1V15 = padding.PKCS1v15()
E_ALGS = {"pkcs1v15": "RSA+AES-GCM", "oaep": "RSA-OAEP-256+AES-GCM"}
E_PADDINGS = {"pkcs1v15": PKCS1V15, "oaep": OAEP_SHA256}
ERROR_CODES = frozenset(
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
_B64URL_RE = re.compile(r"[A-Za-z0-9_-]*")
SIGNATURE_LABEL = "hybrid"
SIGNATURE_TAG = "flask-hybrid"
_KEY_HEADERS = ("x-hybrid-jwe", "x-encrypted-aes-key")  # the bodiless forms' key carriers
REFUSAL_HEADER = "X-Hybrid-Refusal"  # marks the server's own refusals, covered by the signature
_JWK_ALGS = {"enc": "RSA-OAEP-256", "sig": "RS256"}  # the JWK alg each use must name
# Every alg/enc jwcrypto knows, so that tests can build deliberately off-profile JWEs.
_JWE_ALGS = [*jwcrypto_jwe.default_allowed_algs, "RSA1_5"]


# --------------------------------------------------------------------------------------------
# errors and results
# --------------------------------------------------------------------------------------------
class ProtocolViolation(AssertionError):
    """The server answered something PROTOCOL.md does not allow."""


class ProtocolError(Exception):
    """A flask-hybrid refusal: status >= 400 with a JSON ``{"error", "message"}`` body."""

    def __init__(
        self,
        status: int,
        code: str | None,
        body: bytes,
        headers: Headers,
        message: str | None = None,
        signature_ok: bool | None = None,
        message_signature_ok: bool | None = None,
        refusal_marked: bool | None = None,
    ) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        self.headers = headers
        self.signature_ok = signature_ok
        self.message_signature_ok = message_signature_ok
        self.refusal_marked = refusal_marked

    @property
    def known_code(self) -> bool:
        """Whether ``code`` is one of the codes of PROTOCOL.md's error table."""
        return self.code in ERROR_CODES


@dataclass
class Reply:
    status: int
    headers: Headers
    body: bytes  # plaintext after opening
    raw_body: bytes  # what travelled
    sealed: bool
    signature_ok: bool | None
    raw_headers: Headers | None = None  # headers as they travelled
    jose_header: dict[str, Any] | None = None  # J: protected header of the response JWE
    message_signature_ok: bool | None = None  # RFC 9421, bound to the request sent

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    @property
    def content_type(self) -> str | None:
        return self.headers.get("Content-Type")


class CaseInsensitiveDict(MutableMapping[str, str]):
    """A small case-insensitive header mapping that keeps the original spelling."""

    def __init__(self, data: Mapping[str, str] | None = None) -> None:
        self._store: dict[str, tuple[str, str]] = {}
        if data:
            for key, value in data.items():
                self[key] = value

    def __setitem__(self, key: str, value: str) -> None:
        self._store[key.lower()] = (key, value)

    def __getitem__(self, key: str) -> str:
        return self._store[key.lower()][1]

    def __delitem__(self, key: str) -> None:
        del self._store[key.lower()]

    def __iter__(self) -> Iterator[str]:
        return (original for original, _ in self._store.values())

    def __len__(self) -> int:
        return len(self._store)

    def __repr__(self) -> str:
        return f"CaseInsensitiveDict({dict(self.items())!r})"


def _ci(headers: Any) -> CaseInsensitiveDict:
    """Headers from any transport as a case-insensitive dict; repeated names are joined."""
    result = CaseInsensitiveDict()
    items = headers.items() if hasattr(headers, "items") else headers
    for key, value in items:
        if key in result:
            result[key] = f"{result[key]}, {value}"
        else:
            result[key] = str(value)
    return result


def _merge_headers(defaults: Mapping[str, str], overrides: Mapping[str, str | None] | None) -> dict:
    """``defaults`` updated by ``overrides`` (case-insensitive); an override of None removes."""
    merged = CaseInsensitiveDict(defaults)
    for key, value in (overrides or {}).items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return dict(merged.items())


# --------------------------------------------------------------------------------------------
# encodings
# --------------------------------------------------------------------------------------------
def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64_strict(text: Any) -> bytes:
    """Standard base64 with padding, strictly: no whitespace, no URL-safe alphabet."""
    if not isinstance(text, str):
        raise ValueError("not a string")
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise ValueError(f"bad base64: {exc}") from None
    if b64(raw) != text:
        raise ValueError("non-canonical base64")
    return raw


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_strict(text: Any) -> bytes:
    """URL-safe base64 without padding, strictly (RFC 7515 §2)."""
    if not isinstance(text, str) or not _B64URL_RE.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("bad base64url")
    raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if b64url(raw) != text:
        raise ValueError("non-canonical base64url")
    return raw


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


# --------------------------------------------------------------------------------------------
# transports
# --------------------------------------------------------------------------------------------
def flask_transport(test_client: Any, environ_base: Mapping[str, Any] | None = None) -> Transport:
    """A transport over Flask's test client (``app.test_client()``); no redirects followed.

    ``environ_base`` is passed to every request, e.g. ``{"REMOTE_ADDR": "10.0.0.7"}``.
    """

    def send(method: str, target: str, headers: dict[str, str], body: bytes):
        kwargs: dict[str, Any] = {}
        if environ_base is not None:
            kwargs["environ_base"] = dict(environ_base)
        response = test_client.open(
            target,
            method=method,
            headers=list(headers.items()),
            data=body,
            follow_redirects=False,
            **kwargs,
        )
        try:
            return response.status_code, _ci(response.headers.items()), response.get_data()
        finally:
            response.close()

    return send


class HttpTransport:
    """A transport over real HTTP with ``requests``: no retries, no redirects, no proxies.

    The target goes on the wire as given. ``requests`` would otherwise re-quote it (``%7E``
    becomes ``~``), which would change ``htu``. urllib3 may still upper-case percent-escapes, so
    write them in upper case. The body comes back exactly as received, with no content
    decoding, because the response signature covers those bytes. Call ``close()``, or use it as
    a context manager, to release pooled connections.
    """

    def __init__(self, base_url: str, *, timeout: float = 30.0) -> None:
        import requests  # imported here so the module works without it for in-process tests
        from requests.adapters import HTTPAdapter

        self._requests = requests
        self.base = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False
        adapter = HTTPAdapter(max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def __call__(self, method: str, target: str, headers: dict[str, str], body: bytes):
        all_headers = _merge_headers({"Accept-Encoding": "identity"}, headers)
        request = self._requests.Request(
            method, self.base + target, headers=all_headers, data=body or None
        )
        prepared = self.session.prepare_request(request)
        prepared.url = self.base + target
        response = self.session.send(
            prepared, allow_redirects=False, stream=True, timeout=self.timeout
        )
        try:
            raw = response.raw.read(decode_content=False)
        finally:
            response.close()
        return response.status_code, _ci(response.headers.items()), raw

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HttpTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def http_transport(base_url: str, *, timeout: float = 30.0) -> HttpTransport:
    """``HttpTransport(base_url)``: real HTTP via ``requests`` (see there)."""
    return HttpTransport(base_url, timeout=timeout)


def _send(
    transport: Transport, method: str, target: str, headers: dict[str, str], body: bytes
) -> tuple[int, CaseInsensitiveDict, bytes]:
    status, resp_headers, resp_body = transport(method, target, headers, body)
    return status, _ci(resp_headers), bytes(resp_body)


# --------------------------------------------------------------------------------------------
# keys and signatures
# --------------------------------------------------------------------------------------------
def _int_b64url(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def public_jwk(key: rsa.RSAPublicKey) -> dict[str, str]:
    numbers = key.public_numbers()
    return {"kty": "RSA", "n": _int_b64url(numbers.n), "e": _int_b64url(numbers.e)}


def jwk_thumbprint(key: rsa.RSAPublicKey) -> str:
    """RFC 7638 thumbprint (SHA-256, b64url) of an RSA public key."""
    jwk = public_jwk(key)
    canonical = json.dumps(
        {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"), sort_keys=True
    )
    return b64url(hashlib.sha256(canonical.encode("ascii")).digest())


def _load_public_pem(pem: str | bytes) -> rsa.RSAPublicKey:
    key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("not an RSA public key")
    return key


def _public_pem(key: rsa.RSAPublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


@dataclass
class Keys:
    current_kid: str
    public_keys: dict[str, rsa.RSAPublicKey]  # kid -> key to encrypt to, current first
    public_pem: str  # PEM of the current key as /public-key served it
    jwks: dict[str, Any] | None = None  # the JWKS document as served
    signing_keys: dict[str, rsa.RSAPublicKey] | None = None  # kid -> key; None: public_keys

    def __post_init__(self) -> None:
        if self.signing_keys is None:
            self.signing_keys = dict(self.public_keys)

    @property
    def current(self) -> rsa.RSAPublicKey:
        return self.public_keys[self.current_kid]

    def signing_key(self, kid: str) -> rsa.RSAPublicKey | None:
        """The key a signature's kid names (``Keys.signing_keys``)."""
        return (self.signing_keys or {}).get(kid)

    @classmethod
    def from_pems(cls, pems: list[str | bytes]) -> Keys:
        """Keys from public PEMs (current first), kids computed per RFC 7638."""
        loaded = [_load_public_pem(p) for p in pems]
        public_keys = {jwk_thumbprint(k): k for k in loaded}
        current = next(iter(public_keys))
        return cls(current, public_keys, _public_pem(loaded[0]))


def fetch_keys(transport: Transport, prefix: str = DEFAULT_PREFIX) -> Keys:
    """GET ``{prefix}/jwks.json`` and ``{prefix}/public-key`` and check they agree."""
    status, headers, body = _send(transport, "GET", f"{prefix}/jwks.json", {}, b"")
    if status != 200:
        _raise_refusal_or_violation(status, headers, body, "jwks.json")
    jwks = _parse_json(body)
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list) or not jwks["keys"]:
        raise ProtocolViolation(f"jwks.json is not a non-empty JWKS: {body[:200]!r}")
    public_keys: dict[str, rsa.RSAPublicKey] = {}
    signing_keys: dict[str, rsa.RSAPublicKey] = {}
    marked = any(isinstance(entry, dict) and "use" in entry for entry in jwks["keys"])
    for entry in jwks["keys"]:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            raise ProtocolViolation(f"JWKS entry is not an RSA key: {entry!r}")
        use, alg = entry.get("use"), entry.get("alg")
        if use not in (None, "enc", "sig") or (
            use is not None and alg not in (None, _JWK_ALGS[use])
        ):
            raise ProtocolViolation(f"JWKS entry use/alg {use!r}/{alg!r}")
        try:
            n = int.from_bytes(b64url_strict(entry.get("n")), "big")
            e = int.from_bytes(b64url_strict(entry.get("e")), "big")
            key = rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as exc:
            raise ProtocolViolation(f"JWKS entry does not load: {exc}") from None
        if key.key_size < 2048:
            raise ProtocolViolation(f"identity key of {key.key_size} bits (< 2048)")
        kid = jwk_thumbprint(key)
        if entry.get("kid") != kid:
            raise ProtocolViolation(f"JWKS kid {entry.get('kid')!r} is not the RFC 7638 {kid!r}")
        if use != "sig":
            public_keys[kid] = key
        if use == "sig" or not marked:
            signing_keys[kid] = key
    if not public_keys or not signing_keys:
        raise ProtocolViolation("JWKS lacks a key to encrypt to or a key that signs")
    current_kid = next(iter(public_keys))

    status, headers, body = _send(transport, "GET", f"{prefix}/public-key", {}, b"")
    if status != 200:
        _raise_refusal_or_violation(status, headers, body, "public-key")
    doc = _parse_json(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("publicKey"), str):
        raise ProtocolViolation(f"public-key answer is not {{kid, publicKey}}: {body[:200]!r}")
    if doc.get("kid") != current_kid:
        raise ProtocolViolation(f"public-key kid {doc.get('kid')!r} != JWKS first {current_kid!r}")
    try:
        pem_key = _load_public_pem(doc["publicKey"])
    except ValueError as exc:
        raise ProtocolViolation(f"public-key PEM does not load: {exc}") from None
    if pem_key.public_numbers() != public_keys[current_kid].public_numbers():
        raise ProtocolViolation("public-key PEM is not the current JWKS key")
    return Keys(current_kid, public_keys, doc["publicKey"], jwks, signing_keys)


def verify_signature(keys: Keys, headers: Any, body: bytes) -> bool:
    """Check ``X-Response-Signature`` (RSASSA-PKCS1-v1_5 SHA-256 over the exact body bytes)
    made by the signing key named in ``X-Response-Signature-Kid``. False if missing or bad."""
    headers = _ci(headers)
    signature, kid = headers.get("X-Response-Signature"), headers.get("X-Response-Signature-Kid")
    key = None if kid is None else keys.signing_key(kid)
    if signature is None or key is None:
        return False
    try:
        raw = b64_strict(signature)
        key.verify(raw, body, PKCS1V15, hashes.SHA256())
    except (ValueError, InvalidSignature):
        return False
    return True


def _optional_signature(keys: Keys, headers: Headers, body: bytes) -> bool | None:
    if "X-Response-Signature" in headers or "X-Response-Signature-Kid" in headers:
        return verify_signature(keys, headers, body)
    return None


# --------------------------------------------------------------------------------------------
# request-bound response signatures (RFC 9421) over content digests (RFC 9530)
# --------------------------------------------------------------------------------------------
def content_digest(body: bytes) -> str:
    """``Content-Digest`` of ``body``: ``sha-256=:<b64 of SHA-256>:`` (RFC 9530)."""
    return f"sha-256=:{b64(hashlib.sha256(body).digest())}:"


@dataclass(frozen=True)
class SentRequest:
    """A request as this client put it on the wire: what an answer's signature must cover."""

    method: str
    target: str
    headers: Mapping[str, str]
    cek: bytes | None = field(default=None, repr=False)  # its CEK: answers may be bound by it


@dataclass(frozen=True)
class _RequestView:
    method: str
    url: str
    headers: Headers


@dataclass(frozen=True)
class _SignedMessage:
    """A response and the request it answers, in the shape http-message-signatures reads."""

    status_code: int
    headers: Headers
    request: Any


class _SigningKeys(HTTPSignatureKeyResolver):
    def __init__(self, keys: Keys) -> None:
        self._keys = keys

    def resolve_public_key(self, key_id: str) -> rsa.RSAPublicKey | None:
        return self._keys.signing_key(key_id)

    def resolve_private_key(self, key_id: str) -> Any:
        raise NotImplementedError("this client only verifies")


class _BindingVerifier(HTTPMessageVerifier):
    """``created`` must be an integer, but is not compared with the local clock."""

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        if type(sig_input.params.get("created")) is not int:
            raise InvalidMessageSignature('no integer "created" parameter')


def _check_message_signature(
    keys: Keys, request: SentRequest, status: int, headers: Headers, body: bytes
) -> tuple[str | None, str | None]:
    """Why the response lacks a valid RFC 9421 signature bound to ``request`` (None: it has one),
    and the ``X-Hybrid-Refusal`` code the valid signature covers (None: none).

    PROTOCOL.md, "How a client verifies an answer", steps 1 to 4.
    """
    sent = _ci(request.headers)
    if "Content-Digest" not in sent:
        return "the request carried no Content-Digest to bind the answer to", None
    required = ['"@status"', '"content-digest"', '"@method";req', '"content-digest";req']
    required += [f'"{name}";req' for name in _KEY_HEADERS if name in sent]
    url = f"http://protocol-client.invalid{request.target}"  # required, never covered
    message = _SignedMessage(status, _ci(headers), _RequestView(request.method, url, sent))
    algorithm: Any = algorithms.RSA_V1_5_SHA256
    resolver: HTTPSignatureKeyResolver = _SigningKeys(keys)
    if request.cek is not None and 'alg="hmac-sha256"' in _ci(headers).get("Signature-Input", ""):
        # An answer of the app, bound by an HMAC under HKDF-SHA256(the request's CEK).
        answer_key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"flask-hybrid answer binding"
        ).derive(request.cek)
        algorithm = algorithms.HMAC_SHA256
        resolver = MappingKeyResolver(public_keys={"cek": answer_key}, private_keys={})
    verifier = _BindingVerifier(signature_algorithm=algorithm, key_resolver=resolver)
    try:
        (result,) = verifier.verify(
            message,
            max_age=None,
            expect_tag=SIGNATURE_TAG,
            expect_label=SIGNATURE_LABEL,
            require_components=required,
            body=body,
        )
    except (HTTPMessageSignaturesException, ValueError, TypeError) as exc:
        return str(exc) or type(exc).__name__, None
    if result.parameters.get("alg") != algorithm.algorithm_id:
        return f"alg {result.parameters.get('alg')!r} is not {algorithm.algorithm_id}", None
    return None, result.covered_components.get(f'"{REFUSAL_HEADER.lower()}"')


def verify_message_signature(
    keys: Keys, request: SentRequest, status: int, headers: Any, body: bytes
) -> bool:
    """Whether the response carries a valid RFC 9421 signature bound to ``request``."""
    return _check_message_signature(keys, request, status, _ci(headers), body)[0] is None


def _message_signature(
    keys: Keys | None,
    request: SentRequest | None,
    status: int,
    headers: Headers,
    body: bytes,
    *,
    required: bool = False,
    what: str = "response",
) -> bool | None:
    """``message_signature_ok`` of a response; with ``required`` a violation unless True."""
    if keys is None or request is None:
        return None
    problem = (
        _check_message_signature(keys, request, status, headers, body)[0]
        if "Signature-Input" in headers or required
        else None
    )
    if required and problem is not None:
        raise ProtocolViolation(f"{what}: no valid request-bound signature: {problem}")
    return None if "Signature-Input" not in headers else problem is None


# --------------------------------------------------------------------------------------------
# response classification
# --------------------------------------------------------------------------------------------
def _refusal(
    status: int,
    headers: Headers,
    body: bytes,
    keys: Keys | None,
    sent: SentRequest | None = None,
    *,
    required: bool = False,
) -> ProtocolError | None:
    """The refusal this response is, if it is one (``required``: bound signature or violation)."""
    if status < 400:
        return None
    doc = _parse_json(body)
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), str):
        return None
    code, message = doc["error"], doc.get("message")
    message = message if isinstance(message, str) else None
    signature_ok = verify_signature(keys, headers, body) if keys is not None else None
    bound = marked = None
    if keys is not None and sent is not None and ("Signature-Input" in headers or required):
        problem, covered = _check_message_signature(keys, sent, status, headers, body)
        bound, marked = problem is None, problem is None and covered == code
        if required and not bound:
            raise ProtocolViolation(f"refusal {code}: no valid request-bound signature: {problem}")
        if required and not marked:
            raise ProtocolViolation(f"refusal {code}: the signature covers no {REFUSAL_HEADER}")
    return ProtocolError(status, code, body, headers, message, signature_ok, bound, marked)


def _raise_refusal_or_violation(
    status: int,
    headers: Headers,
    body: bytes,
    what: str,
    keys: Keys | None = None,
    sent: SentRequest | None = None,
    *,
    required: bool = False,
):
    error = _refusal(status, headers, body, keys, sent, required=required)
    if error is not None:
        raise error
    raise ProtocolViolation(f"{what}: unexpected HTTP {status}: {body[:300]!r}")


def _empty_allowed(method: str, status: int, body: bytes) -> bool:
    return body == b"" and (method.upper() == "HEAD" or status in (204, 304))


def _plaintext_headers(headers: Headers, content_type: str | None) -> CaseInsensitiveDict:
    result = CaseInsensitiveDict(headers)
    if content_type is None:
        result.pop("Content-Type", None)
    else:
        result["Content-Type"] = content_type
    return result


# --------------------------------------------------------------------------------------------
# AES-GCM and the S / E sealed shapes
# --------------------------------------------------------------------------------------------
def _gcm_seal(cek: bytes, iv: bytes, plaintext: bytes) -> tuple[bytes, bytes]:
    sealed = AESGCM(cek).encrypt(iv, plaintext, None)
    return sealed[:-TAG_SIZE], sealed[-TAG_SIZE:]


def open_s_sealed(envelope: Any, cek: bytes) -> tuple[bytes, bytes]:
    """Open an S sealed body ``{"encryptedData", "iv", "authTag"}``: (plaintext, iv)."""
    if not isinstance(envelope, dict):
        raise ProtocolViolation(f"S sealed body is not a JSON object: {envelope!r}")
    try:
        data = b64_strict(envelope.get("encryptedData"))
        iv = b64_strict(envelope.get("iv"))
        tag = b64_strict(envelope.get("authTag"))
    except ValueError as exc:
        raise ProtocolViolation(f"S sealed body: {exc}") from None
    if len(iv) != IV_SIZE or len(tag) != TAG_SIZE:
        raise ProtocolViolation(f"S sealed body: iv {len(iv)} bytes, tag {len(tag)} bytes")
    try:
        return AESGCM(cek).decrypt(iv, data + tag, None), iv
    except InvalidTag:
        raise ProtocolViolation("S sealed body does not open under the request CEK") from None


def open_e_sealed(envelope: Any, cek: bytes) -> tuple[bytes, bytes]:
    """Open an E sealed response ``{"alg": "AES-GCM", "iv", "ct"}``: (plaintext, iv)."""
    if not isinstance(envelope, dict) or envelope.get("alg") != "AES-GCM":
        raise ProtocolViolation(f"E sealed body is not {{alg: AES-GCM, iv, ct}}: {envelope!r}")
    try:
        iv = b64_strict(envelope.get("iv"))
        ct = b64_strict(envelope.get("ct"))
    except ValueError as exc:
        raise ProtocolViolation(f"E sealed body: {exc}") from None
    if len(iv) != IV_SIZE or len(ct) < TAG_SIZE:
        raise ProtocolViolation(f"E sealed body: iv {len(iv)} bytes, ct {len(ct)} bytes")
    try:
        return AESGCM(cek).decrypt(iv, ct, None), iv
    except InvalidTag:
        raise ProtocolViolation("E sealed body does not open under the request CEK") from None


# --------------------------------------------------------------------------------------------
# format S
# --------------------------------------------------------------------------------------------
class SessionClient:
    """Format S: the session-based RSA-OAEP + AES-256-GCM design."""

    def __init__(
        self,
        transport: Transport,
        keys: Keys,
        device_id: str = "test-device-1",
        *,
        reuse_key: bool = False,
        require_message_signatures: bool = False,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        self.transport = transport
        self.keys = keys
        self.device_id = device_id
        self.reuse_key = reuse_key
        self.require_message_signatures = require_message_signatures
        self.prefix = prefix
        self.handshake_message_signature_ok: bool | None = None
        self.token: str | None = None
        self.session_id: str | None = None
        self.session_public_key: rsa.RSAPublicKey | None = None
        self.session_public_pem: str | None = None
        self.expires_in: int | None = None
        self.token_claims: dict[str, Any] | None = None  # the JWT payload, NOT verified
        self.handshake_cek: bytes | None = None
        self.last_cek: bytes | None = None
        self.last_iv: bytes | None = None
        self._reused: tuple[bytes, str] | None = None  # (cek, b64 encryptedAesKey)

    # -- handshake ------------------------------------------------------------------------
    def handshake(self, *, aes_key: bytes | None = None, headers: Mapping | None = None) -> dict:
        """POST {prefix}/session, S form. Checks 201 and the signature, opens, stores, returns."""
        cek = secrets.token_bytes(CEK_SIZE) if aes_key is None else aes_key
        body = _json_bytes({"aesKey": b64(cek), "deviceId": self.device_id})
        req_headers = _merge_headers(
            {"Content-Type": "application/json", "Content-Digest": content_digest(body)}, headers
        )
        target = f"{self.prefix}/session"
        status, resp_headers, resp_body = _send(self.transport, "POST", target, req_headers, body)
        sent = SentRequest("POST", target, req_headers)
        required = self.require_message_signatures
        if status != 201:
            _raise_refusal_or_violation(
                status, resp_headers, resp_body, "handshake", self.keys, sent, required=required
            )
        if not verify_signature(self.keys, resp_headers, resp_body):
            raise ProtocolViolation("handshake response signature missing or bad")
        self.handshake_message_signature_ok = _message_signature(
            self.keys, sent, status, resp_headers, resp_body, required=required, what="handshake"
        )
        if _media_type(resp_headers.get("Content-Type")) != "application/json":
            raise ProtocolViolation(f"handshake Content-Type {resp_headers.get('Content-Type')!r}")
        plaintext, _ = open_s_sealed(_parse_json(resp_body), cek)
        data = _parse_json(plaintext)
        self.handshake_cek = cek
        self.adopt(data)
        return data

    def adopt(self, data: Any) -> None:
        """Take over a handshake result ``{"token", "publicKey", "sessionId", "expiresIn"}``
        (from the S handshake, or J's ``JweClient.handshake``)."""
        if not isinstance(data, dict):
            raise ProtocolViolation(f"handshake result is not a JSON object: {data!r}")
        token, pem, session_id = data.get("token"), data.get("publicKey"), data.get("sessionId")
        expires_in = data.get("expiresIn")
        if not (isinstance(token, str) and isinstance(pem, str) and isinstance(session_id, str)):
            raise ProtocolViolation(f"handshake result lacks token/publicKey/sessionId: {data!r}")
        if not isinstance(expires_in, int) or isinstance(expires_in, bool) or expires_in <= 0:
            raise ProtocolViolation(
                f"handshake expiresIn is not a positive integer: {expires_in!r}"
            )
        try:
            self.session_public_key = _load_public_pem(pem)
        except ValueError as exc:
            raise ProtocolViolation(f"session publicKey does not load: {exc}") from None
        self.token, self.session_public_pem = token, pem
        self.session_id, self.expires_in = session_id, expires_in
        self.token_claims = _unverified_jwt_claims(token)
        self._reused = None

    # -- requests -------------------------------------------------------------------------
    def session_headers(self) -> dict[str, str]:
        if self.token is None:
            raise RuntimeError("no session: call handshake() first")
        return {
            "Authorization": f"Bearer {self.token}",
            "X-Device-Id": self.device_id,
            "X-Encryption-Enabled": "true",
        }

    def wrap_key(self, cek: bytes) -> str:
        """b64(RSA-OAEP-SHA-256 of ``cek`` under the session key); reused with ``reuse_key``."""
        if self.session_public_key is None:
            raise RuntimeError("no session public key: call handshake() or adopt() first")
        if self.reuse_key and self._reused is not None and self._reused[0] == cek:
            return self._reused[1]
        wrapped = b64(self.session_public_key.encrypt(cek, OAEP_SHA256))
        if self.reuse_key and self._reused is None:
            self._reused = (cek, wrapped)
        return wrapped

    def _next_cek(self, cek: bytes | None) -> bytes:
        if cek is not None:
            return cek
        if self.reuse_key and self._reused is not None:
            return self._reused[0]
        return secrets.token_bytes(CEK_SIZE)

    def envelope(self, plaintext: bytes, cek: bytes | None = None, iv: bytes | None = None) -> dict:
        """The S request body for ``plaintext``; remembers ``last_cek`` / ``last_iv``."""
        cek = self._next_cek(cek)
        iv = secrets.token_bytes(IV_SIZE) if iv is None else iv
        data, tag = _gcm_seal(cek, iv, plaintext)
        self.last_cek, self.last_iv = cek, iv
        return {
            "encryptedAesKey": self.wrap_key(cek),
            "encryptedData": b64(data),
            "iv": b64(iv),
            "authTag": b64(tag),
        }

    def request(
        self,
        method: str,
        target: str,
        json_body: Any = None,
        *,
        headers: Mapping[str, str | None] | None = None,
        raw_body: bytes | None = None,
        tamper: Callable[[dict], dict | None] | None = None,
        plaintext: bytes | None = None,
        cek: bytes | None = None,
        iv: bytes | None = None,
    ) -> Reply:
        """An S request. With ``json_body`` (or ``plaintext`` bytes) the body is the S envelope;
        with neither, the CEK travels in ``X-Encrypted-Aes-Key``. ``raw_body`` is sent verbatim
        (the response is opened under ``cek`` or ``last_cek``). ``tamper`` gets the envelope
        dict (header form: the headers dict) to change in place or replace before sending.
        ``headers`` override the defaults; a value of None removes a default header.
        """
        if json_body is not None:
            plaintext = _json_bytes(json_body)
        defaults = self.session_headers()
        request_iv: bytes | None = None
        if raw_body is not None:
            body = raw_body
            defaults["Content-Type"] = "application/json"
            open_cek = cek if cek is not None else self.last_cek
        elif plaintext is not None:
            envelope = self.envelope(plaintext, cek, iv)
            open_cek, request_iv = self.last_cek, self.last_iv
            if tamper is not None:
                envelope = tamper(envelope) or envelope
            body = _json_bytes(envelope)
            defaults["Content-Type"] = "application/json"
        else:
            open_cek = self._next_cek(cek)
            self.last_cek, self.last_iv = open_cek, None
            defaults["X-Encrypted-Aes-Key"] = self.wrap_key(open_cek)
            body = b""
        defaults["Content-Digest"] = content_digest(body)
        req_headers = _merge_headers(defaults, headers)
        if tamper is not None and raw_body is None and plaintext is None:
            req_headers = tamper(req_headers) or req_headers
        status, resp_headers, resp_body = _send(self.transport, method, target, req_headers, body)
        sent = SentRequest(method, target, req_headers, open_cek)
        return self._open(method, status, resp_headers, resp_body, open_cek, request_iv, sent)

    def _open(
        self,
        method: str,
        status: int,
        headers: CaseInsensitiveDict,
        body: bytes,
        cek: bytes | None,
        request_iv: bytes | None,
        sent: SentRequest | None = None,
    ) -> Reply:
        doc = _parse_json(body)
        if isinstance(doc, dict) and {"encryptedData", "iv", "authTag"} <= doc.keys():
            if cek is None:
                raise ValueError("sealed response but no CEK to open it with")
            if _media_type(headers.get("Content-Type")) != "application/json":
                raise ProtocolViolation(f"sealed S Content-Type {headers.get('Content-Type')!r}")
            if headers.get("X-Encryption-Enabled", "").lower() != "true":
                raise ProtocolViolation("sealed S response without X-Encryption-Enabled: true")
            app_type = headers.get("X-Plaintext-Content-Type")
            if app_type is None:
                raise ProtocolViolation("sealed S response without X-Plaintext-Content-Type")
            plaintext, iv = open_s_sealed(doc, cek)
            if request_iv is not None and iv == request_iv:
                raise ProtocolViolation("S response reuses the request IV")
            return Reply(
                status,
                _plaintext_headers(headers, app_type),
                plaintext,
                body,
                True,
                _optional_signature(self.keys, headers, body),
                raw_headers=headers,
                message_signature_ok=_message_signature(self.keys, sent, status, headers, body),
            )
        bound = _raise_unless_empty(
            self.keys,
            method,
            status,
            headers,
            body,
            "S",
            sent,
            required=self.require_message_signatures,
        )
        return Reply(
            status,
            headers,
            body,
            body,
            False,
            _optional_signature(self.keys, headers, body),
            raw_headers=headers,
            message_signature_ok=bound,
        )

    def close(self, *, headers: Mapping[str, str | None] | None = None) -> int:
        """DELETE {prefix}/session with the bearer token and device id; returns the status."""
        defaults = {
            "Authorization": f"Bearer {self.token}",
            "X-Device-Id": self.device_id,
            "Content-Digest": content_digest(b""),
        }
        req_headers = _merge_headers(defaults, headers)
        target = f"{self.prefix}/session"
        status, resp_headers, resp_body = _send(self.transport, "DELETE", target, req_headers, b"")
        _message_signature(
            self.keys,
            SentRequest("DELETE", target, req_headers),
            status,
            resp_headers,
            resp_body,
            required=self.require_message_signatures,
            what="session DELETE",
        )
        return status


def _raise_unless_empty(
    keys: Keys,
    method: str,
    status: int,
    headers: Headers,
    body: bytes,
    fmt: str,
    sent: SentRequest | None = None,
    *,
    required: bool = False,
) -> bool | None:
    """For a response that is not sealed: raise the refusal, or a violation unless empty.

    Returns ``message_signature_ok`` of the empty answer (required but for HEAD, whose answer
    the server may not sign: its headers describe a body that is not sent).
    """
    error = _refusal(status, headers, body, keys, sent, required=required)
    if error is not None:
        raise error
    if not _empty_allowed(method, status, body):
        raise ProtocolViolation(
            f"{fmt}: HTTP {status} response is neither sealed nor a refusal: {body[:300]!r}"
        )
    return _message_signature(
        keys,
        sent,
        status,
        headers,
        body,
        required=required and method.upper() != "HEAD",
        what=f"{fmt}: bodiless HTTP {status}",
    )


def _unverified_jwt_claims(token: str) -> dict[str, Any] | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(b64url_strict(parts[1]))
    except ValueError:
        return None
    return claims if isinstance(claims, dict) else None


# --------------------------------------------------------------------------------------------
# format E
# --------------------------------------------------------------------------------------------
class EnvelopeClient:
    """Format E: the stateless JSEncrypt-compatible envelope."""

    def __init__(
        self,
        transport: Transport,
        keys: Keys,
        *,
        padding: str = "pkcs1v15",
        cek_form: str = "b64_text",
        with_kid: bool = False,
        encrypt_response: bool = False,
        kid: str | None = None,
        refetch_on_unknown_key: bool = False,
        require_message_signatures: bool = False,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        if padding not in E_ALGS:
            raise ValueError(f"padding must be one of {sorted(E_ALGS)}")
        if cek_form not in ("b64_text", "raw"):
            raise ValueError("cek_form must be 'b64_text' or 'raw'")
        self.transport = transport
        self.keys = keys
        self.padding = padding
        self.cek_form = cek_form
        self.with_kid = with_kid
        self.encrypt_response = encrypt_response
        self.kid = kid  # None: the current identity key
        self.refetch_on_unknown_key = refetch_on_unknown_key
        self.require_message_signatures = require_message_signatures
        self.prefix = prefix
        self.last_cek: bytes | None = None
        self.last_iv: bytes | None = None

    @property
    def target_kid(self) -> str:
        return self.kid if self.kid is not None else self.keys.current_kid

    def wrap_key(self, cek: bytes, kid: str | None = None) -> bytes:
        """The RSA ciphertext ``ek`` (under ``kid``, default the target key) for ``cek``."""
        key = self.keys.public_keys[kid or self.target_kid]
        message = b64(cek).encode("ascii") if self.cek_form == "b64_text" else cek
        return key.encrypt(message, E_PADDINGS[self.padding])

    def envelope(self, plaintext: bytes, cek: bytes | None = None, iv: bytes | None = None) -> dict:
        cek = secrets.token_bytes(CEK_SIZE) if cek is None else cek
        iv = secrets.token_bytes(IV_SIZE) if iv is None else iv
        ct = AESGCM(cek).encrypt(iv, plaintext, None)
        self.last_cek, self.last_iv = cek, iv
        envelope = {
            "alg": E_ALGS[self.padding],
            "ek": b64(self.wrap_key(cek)),
            "iv": b64(iv),
            "ct": b64(ct),
        }
        if self.with_kid:
            envelope["kid"] = self.target_kid
        return envelope

    def request(
        self,
        method: str,
        target: str,
        json_body: Any = None,
        *,
        headers: Mapping[str, str | None] | None = None,
        plaintext: bytes | None = None,
        raw_body: bytes | None = None,
        tamper: Callable[[dict], dict | None] | None = None,
        cek: bytes | None = None,
        iv: bytes | None = None,
    ) -> Reply:
        """An E request (``X-Encryption-Enabled: true``, plus ``X-Encrypt-Response: true`` when
        ``encrypt_response``). ``raw_body`` is sent verbatim (responses opened under ``cek`` or
        ``last_cek``); ``tamper`` may change the envelope dict before it is sent."""
        try:
            return self._request(
                method, target, json_body, headers, plaintext, raw_body, tamper, cek, iv
            )
        except ProtocolError as exc:
            if not (
                exc.code == "unknown_key"
                and self.refetch_on_unknown_key
                and self.kid is None
                and raw_body is None
            ):
                raise
            self.keys = fetch_keys(self.transport, self.prefix)
            return self._request(
                method, target, json_body, headers, plaintext, raw_body, tamper, cek, iv
            )

    def _request(self, method, target, json_body, headers, plaintext, raw_body, tamper, cek, iv):
        if json_body is not None:
            plaintext = _json_bytes(json_body)
        request_iv: bytes | None = None
        if raw_body is not None:
            body = raw_body
            open_cek = cek if cek is not None else self.last_cek
        else:
            if plaintext is None:
                raise ValueError("format E needs a body: json_body, plaintext or raw_body")
            envelope = self.envelope(plaintext, cek, iv)
            open_cek, request_iv = self.last_cek, self.last_iv
            if tamper is not None:
                envelope = tamper(envelope) or envelope
            body = _json_bytes(envelope)
        defaults = {
            "Content-Type": "application/json",
            "X-Encryption-Enabled": "true",
            "Content-Digest": content_digest(body),
        }
        if self.encrypt_response:
            defaults["X-Encrypt-Response"] = "true"
        req_headers = _merge_headers(defaults, headers)
        sealed_wanted = _ci(req_headers).get("X-Encrypt-Response", "").lower() == "true"
        status, resp_headers, resp_body = _send(self.transport, method, target, req_headers, body)
        sent = SentRequest(method, target, req_headers, open_cek)
        required = self.require_message_signatures

        if not sealed_wanted:
            # Only the server's own refusals carry X-Hybrid-Refusal; an app's plaintext answer
            # that looks like one is the app's answer.
            marked = REFUSAL_HEADER in resp_headers
            error = _refusal(
                status, resp_headers, resp_body, self.keys, sent, required=required and marked
            )
            if error is not None and marked:
                raise error
            return Reply(
                status,
                resp_headers,
                resp_body,
                resp_body,
                False,
                verify_signature(self.keys, resp_headers, resp_body),
                raw_headers=resp_headers,
                message_signature_ok=_message_signature(
                    self.keys,
                    sent,
                    status,
                    resp_headers,
                    resp_body,
                    required=required,
                    what="E plaintext answer",
                ),
            )
        doc = _parse_json(resp_body)
        if isinstance(doc, dict) and doc.get("alg") == "AES-GCM" and "ct" in doc:
            if open_cek is None:
                raise ValueError("sealed response but no CEK to open it with")
            app_type = resp_headers.get("X-Plaintext-Content-Type")
            if app_type is None:
                raise ProtocolViolation("sealed E response without X-Plaintext-Content-Type")
            opened, resp_iv = open_e_sealed(doc, open_cek)
            if request_iv is not None and resp_iv == request_iv:
                raise ProtocolViolation("E response reuses the request IV")
            return Reply(
                status,
                _plaintext_headers(resp_headers, app_type),
                opened,
                resp_body,
                True,
                _optional_signature(self.keys, resp_headers, resp_body),
                raw_headers=resp_headers,
                message_signature_ok=_message_signature(
                    self.keys, sent, status, resp_headers, resp_body
                ),
            )
        bound = _raise_unless_empty(
            self.keys, method, status, resp_headers, resp_body, "E", sent, required=required
        )
        return Reply(
            status,
            resp_headers,
            resp_body,
            resp_body,
            False,
            verify_signature(self.keys, resp_headers, resp_body),
            raw_headers=resp_headers,
            message_signature_ok=bound,
        )


# --------------------------------------------------------------------------------------------
# format J
# --------------------------------------------------------------------------------------------
def _jwcrypto_decrypt(token: jwcrypto_jwe.JWE, key: jwcrypto_jwk.JWK) -> bytes:
    """``token.decrypt(key)`` with the jwcrypto 1.6.1 empty-payload quirk handled."""
    try:
        token.decrypt(key)
    except jwcrypto_jwe.InvalidJWEData:
        if token.decryptlog == ["Success"] and token.plaintext == b"":
            return b""
        raise
    return token.plaintext


def _split_compact(compact: Any) -> tuple[list[str], dict[str, Any]]:
    """Five strict-b64url segments and the protected header (a JSON object)."""
    if not isinstance(compact, str) or compact.count(".") != 4:
        raise ValueError("not a JWE compact serialization (5 segments)")
    parts = compact.split(".")
    for part in parts:
        b64url_strict(part)
    header = json.loads(b64url_strict(parts[0]))
    if not isinstance(header, dict):
        raise ValueError("protected header is not a JSON object")
    return parts, header


def open_response_jwe(compact: str, cek: bytes) -> tuple[dict[str, Any], bytes, bytes]:
    """Open a J response (``alg: dir`` under the request CEK) with jwcrypto, after strict checks
    of the serialization and profile. Returns (protected header, plaintext, iv)."""
    try:
        parts, header = _split_compact(compact)
    except ValueError as exc:
        raise ProtocolViolation(f"J response is not a JWE compact: {exc}") from None
    if header.get("alg") != "dir" or header.get("enc") != "A256GCM":
        raise ProtocolViolation(f"J response alg/enc {header.get('alg')}/{header.get('enc')}")
    if "zip" in header or "crit" in header:
        raise ProtocolViolation(f"J response header has zip/crit: {header!r}")
    iv, tag = b64url_strict(parts[2]), b64url_strict(parts[4])
    if parts[1] != "" or len(iv) != IV_SIZE or len(tag) != TAG_SIZE:
        raise ProtocolViolation(
            f"J response: ek {len(parts[1])} chars, iv {len(iv)} bytes, tag {len(tag)} bytes"
        )
    token = jwcrypto_jwe.JWE(algs=["dir", "A256GCM"])
    token.deserialize(compact)
    key = jwcrypto_jwk.JWK(kty="oct", k=b64url(cek))
    try:
        plaintext = _jwcrypto_decrypt(token, key)
    except jwcrypto_jwe.InvalidJWEData as exc:
        raise ProtocolViolation(f"J response does not open under the request CEK: {exc}") from None
    return header, plaintext, iv


def open_request_jwe(
    compact: str, private_key: rsa.RSAPrivateKey
) -> tuple[dict[str, Any], bytes, bytes]:
    """Decrypt a J request JWE with jwcrypto and the recipient's private key (a check of what
    this client builds). Returns (protected header, plaintext, cek)."""
    _, header = _split_compact(compact)
    token = jwcrypto_jwe.JWE(algs=["RSA-OAEP-256", "A256GCM"])
    token.deserialize(compact)
    plaintext = _jwcrypto_decrypt(token, jwcrypto_jwk.JWK.from_pyca(private_key))
    return header, plaintext, token.cek


class JweClient:
    """Format J: JWE compact (RSA-OAEP-256 / A256GCM) with htm/htu/iat/jti; ``dir`` replies."""

    def __init__(
        self,
        transport: Transport,
        keys: Keys,
        *,
        kid: str | None = None,
        session: SessionClient | None = None,
        reuse_key: bool = False,
        clock: Callable[[], float] = time.time,
        refetch_on_unknown_key: bool = False,
        require_message_signatures: bool = False,
        prefix: str = DEFAULT_PREFIX,
    ) -> None:
        if session is not None and kid is not None:
            raise ValueError("give kid or session, not both")
        self.transport = transport
        self.keys = keys
        self.kid = kid  # None: the current identity key (or the session id with a session)
        self.session = session
        self.reuse_key = reuse_key
        self.clock = clock
        self.refetch_on_unknown_key = refetch_on_unknown_key
        self.require_message_signatures = require_message_signatures
        self.prefix = prefix
        self.last_cek: bytes | None = None
        self.last_jti: str | None = None
        self.last_jwe: str | None = None
        self._reused_cek: bytes | None = None
        self._reused_ek: dict[str, str] = {}  # kid -> encrypted-key segment

    # -- building ---------------------------------------------------------------------------
    def _recipient(self) -> tuple[str, rsa.RSAPublicKey]:
        if self.session is not None:
            if self.session.session_id is None or self.session.session_public_key is None:
                raise RuntimeError("the session has no handshake yet")
            return self.session.session_id, self.session.session_public_key
        kid = self.kid if self.kid is not None else self.keys.current_kid
        return kid, self.keys.public_keys[kid]

    def new_jti(self) -> str:
        return b64url(secrets.token_bytes(16))

    def build(
        self,
        method: str,
        target: str,
        plaintext: bytes | None,
        *,
        iat: int | None = None,
        jti: str | None = None,
        cty: str | None = "json",
        extra_header: Mapping[str, Any] | None = None,
        cek: bytes | None = None,
        encrypt_to: rsa.RSAPublicKey | None = None,
    ) -> tuple[str, bytes]:
        """A request JWE (compact) and its CEK. The protected header is, in this order,
        alg, enc, kid, htm, htu, iat, jti[, cty], then ``extra_header`` (a value of None
        removes a member, any other replaces or adds one). ``plaintext`` None is the empty
        payload of the header form. ``encrypt_to`` overrides the recipient key."""
        kid, recipient = self._recipient()
        header: dict[str, Any] = {
            "alg": "RSA-OAEP-256",
            "enc": "A256GCM",
            "kid": kid,
            "htm": method.upper(),
            "htu": target,
            "iat": int(self.clock()) if iat is None else iat,
            "jti": self.new_jti() if jti is None else jti,
        }
        if cty is not None:
            header["cty"] = cty
        for name, value in (extra_header or {}).items():
            if value is None:
                header.pop(name, None)
            else:
                header[name] = value
        if cek is None and self.reuse_key:
            if self._reused_cek is None:
                self._reused_cek = secrets.token_bytes(CEK_SIZE)
            cek = self._reused_cek
        token = jwcrypto_jwe.JWE(
            plaintext=b"" if plaintext is None else plaintext,
            protected=json.dumps(header, separators=(",", ":"), ensure_ascii=False),
            algs=_JWE_ALGS,
        )
        token.cek = cek  # preset (None: jwcrypto makes a random one and keeps it in .cek)
        token.add_recipient(jwcrypto_jwk.JWK.from_pyca(encrypt_to or recipient))
        compact = token.serialize(compact=True)
        cek = token.cek
        if self.reuse_key and cek == self._reused_cek and encrypt_to is None:
            parts = compact.split(".")
            parts[1] = self._reused_ek.setdefault(kid, parts[1])
            compact = ".".join(parts)
        self.last_cek, self.last_jti, self.last_jwe = cek, header.get("jti"), compact
        return compact, cek

    # -- requests -----------------------------------------------------------------------------
    def request(
        self,
        method: str,
        target: str,
        json_body: Any = None,
        *,
        headers: Mapping[str, str | None] | None = None,
        iat: int | None = None,
        jti: str | None = None,
        jwe: str | None = None,
        cek: bytes | None = None,
        plaintext: bytes | None = None,
        cty: str | None = "json",
        extra_header: Mapping[str, Any] | None = None,
        carrier: str | None = None,
    ) -> Reply:
        """A J request. With ``json_body`` (or ``plaintext``) the JWE is the body
        (``Content-Type: application/jose``); with neither it is an empty-payload JWE in
        ``X-Hybrid-JWE``. ``jwe`` sends a ready JWE verbatim (open the reply with ``cek``);
        ``carrier`` ("body" / "header") forces where it goes."""
        args = dict(
            headers=headers, iat=iat, jti=jti, jwe=jwe, cek=cek, plaintext=plaintext, cty=cty,
            extra_header=extra_header, carrier=carrier,
        )  # fmt: skip
        try:
            return self._request(method, target, json_body, **args)
        except ProtocolError as exc:
            if not (
                exc.code == "unknown_key"
                and self.refetch_on_unknown_key
                and self.kid is None
                and self.session is None
                and jwe is None
            ):
                raise
            self.keys = fetch_keys(self.transport, self.prefix)
            args["jti"] = None  # a retry is a new request
            return self._request(method, target, json_body, **args)

    def _request(self, method, target, json_body, *, headers, iat, jti, jwe, cek, plaintext, cty,
                 extra_header, carrier):  # fmt: skip
        if json_body is not None:
            plaintext = _json_bytes(json_body)
        if carrier is None:
            carrier = "body" if (plaintext is not None or jwe is not None) else "header"
        if carrier not in ("body", "header"):
            raise ValueError("carrier is 'body' or 'header'")
        if jwe is None:
            jwe, cek = self.build(
                method, target, plaintext, iat=iat, jti=jti, cty=cty, extra_header=extra_header,
                cek=cek,
            )  # fmt: skip
        request_jti, request_iv = _jti_and_iv(jwe)
        defaults: dict[str, str] = {}
        if self.session is not None:
            defaults["Authorization"] = f"Bearer {self.session.token}"
            defaults["X-Device-Id"] = self.session.device_id
        if carrier == "body":
            defaults["Content-Type"] = "application/jose"
            body = jwe.encode("ascii")
        else:
            defaults["X-Hybrid-JWE"] = jwe
            defaults["X-Encryption-Enabled"] = "true"
            body = b""
        defaults["Content-Digest"] = content_digest(body)
        req_headers = _merge_headers(defaults, headers)
        status, resp_headers, resp_body = _send(self.transport, method, target, req_headers, body)
        sent = SentRequest(method, target, req_headers, cek)
        return self._open(
            method, status, resp_headers, resp_body, cek, request_jti, request_iv, sent
        )

    def _open(
        self, method, status, headers, body, cek, request_jti, request_iv, sent=None
    ) -> Reply:
        if _media_type(headers.get("Content-Type")) == "application/jose":
            if cek is None:
                raise ValueError("sealed response but no CEK to open it with")
            try:
                compact = body.decode("ascii")
            except UnicodeDecodeError:
                raise ProtocolViolation("J response body is not ASCII") from None
            header, plaintext, iv = open_response_jwe(compact, cek)
            if request_jti is not None and header.get("req") != request_jti:
                raise ProtocolViolation(f"J response req {header.get('req')!r} != {request_jti!r}")
            rstatus = header.get("status")
            if not isinstance(rstatus, int) or isinstance(rstatus, bool) or rstatus != status:
                raise ProtocolViolation(f"J response status {rstatus!r} != HTTP {status}")
            if not isinstance(header.get("cty"), str):
                raise ProtocolViolation(f"J response cty missing or not a string: {header!r}")
            if request_iv is not None and iv == request_iv:
                raise ProtocolViolation("J response reuses the request IV")
            return Reply(
                status,
                _plaintext_headers(headers, header["cty"]),
                plaintext,
                body,
                True,
                _optional_signature(self.keys, headers, body),
                raw_headers=headers,
                jose_header=header,
                message_signature_ok=_message_signature(self.keys, sent, status, headers, body),
            )
        bound = _raise_unless_empty(
            self.keys,
            method,
            status,
            headers,
            body,
            "J",
            sent,
            required=self.require_message_signatures,
        )
        return Reply(
            status,
            headers,
            body,
            body,
            False,
            _optional_signature(self.keys, headers, body),
            raw_headers=headers,
            message_signature_ok=bound,
        )

    def handshake(
        self,
        device_id: str,
        *,
        headers: Mapping[str, str | None] | None = None,
        iat: int | None = None,
        jti: str | None = None,
        cek: bytes | None = None,
    ) -> dict:
        """The J form of POST {prefix}/session (to an identity key): returns the handshake JSON
        (``SessionClient.adopt`` takes it)."""
        if self.session is not None:
            raise RuntimeError("a J handshake goes to an identity key, not a session")
        reply = self.request(
            "POST",
            f"{self.prefix}/session",
            {"deviceId": device_id},
            headers=headers,
            iat=iat,
            jti=jti,
            cek=cek,
        )
        if reply.status != 201:
            raise ProtocolViolation(f"J handshake answered HTTP {reply.status}: {reply.body!r}")
        if self.require_message_signatures and reply.message_signature_ok is not True:
            raise ProtocolViolation("J handshake answer without a valid request-bound signature")
        if _media_type(reply.content_type) != "application/json":
            raise ProtocolViolation(f"J handshake payload type {reply.content_type!r}")
        data = reply.json()
        if not isinstance(data, dict):
            raise ProtocolViolation(f"J handshake payload is not a JSON object: {data!r}")
        return data


def _jti_and_iv(compact: str) -> tuple[str | None, bytes | None]:
    """The jti and IV of a request JWE, read leniently (it may be deliberately malformed)."""
    try:
        parts, header = _split_compact(compact)
        iv = b64url_strict(parts[2])
    except ValueError:
        return None, None
    jti = header.get("jti")
    return (jti if isinstance(jti, str) else None), iv
