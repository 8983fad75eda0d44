"""Request-bound response signatures (RFC 9421) over RFC 9530 content digests, sans-I/O.

A signature over a body alone proves only that the server once sent those bytes, and every
refusal of one code has the same bytes. These signatures also cover the request they answer
(its method, its ``Content-Digest`` and, for the bodiless forms, its key header), so a proxy
cannot pass an answer to one request off as the answer to another (PROTOCOL.md,
"Request-bound response signatures"). The signature base is built by the kept library
``http-message-signatures``; what is covered, and the RSA operation, are decided here.
"""

from __future__ import annotations

import hashlib
import hmac as constant_time
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import http_sf
from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)

from ..errors import InvalidPayload
from .encoding import b64encode
from .rsa import PrivateKey, PublicKey, sign

LABEL = "hybrid"
TAG = "flask-hybrid"
ALGORITHM = algorithms.RSA_V1_5_SHA256
#: Format S's sealed answers: an HMAC under a key derived from the request's own CEK.
HMAC_ALGORITHM = algorithms.HMAC_SHA256
CEK_KEYID = "cek"
_ANSWER_KEY_INFO = b"flask-hybrid answer binding"
#: The request headers that carry the key of a bodiless request (S and J header forms).
KEY_HEADERS = ("x-hybrid-jwe", "x-encrypted-aes-key")
#: Names flask-hybrid's own refusal, covered by its signature: an app's answer that merely looks
#: like a refusal (an E plaintext ``401 {"error":"unknown_key"}``) never carries it.
REFUSAL_HEADER = "X-Hybrid-Refusal"
#: The response headers a signature adds (and that a cross-origin client must be able to read).
RESPONSE_HEADERS = ("Content-Digest", "Signature-Input", "Signature", REFUSAL_HEADER)
_REQUIRED = ('"@status"', '"content-digest"', '"@method";req', '"content-digest";req')
# No URL component is ever covered, but the library's resolver wants a URL for a request.
_PLACEHOLDER_URL = "http://flask-hybrid.invalid/"
_METHOD = re.compile(r"[A-Z]+")  # what a signature base carries as "@method"
_DIGESTS = {"sha-256": hashlib.sha256, "sha-512": hashlib.sha512}


def content_digest(body: bytes | Sequence[bytes]) -> str:
    """The RFC 9530 ``Content-Digest`` field value of ``body`` (bytes, or the pieces that join
    into it): ``sha-256=:<b64>:``."""
    if isinstance(body, (bytes, bytearray, memoryview)):
        return f"sha-256=:{b64encode(hashlib.sha256(body).digest())}:"
    digest = hashlib.sha256()
    for piece in body:
        digest.update(piece)
    return f"sha-256=:{b64encode(digest.digest())}:"


class RequestDigest:
    """A request's ``Content-Digest`` (RFC 9530), checked against its body as it is read.

    Every ``sha-256`` and ``sha-512`` member must match; other algorithms are ignored, but a
    field must have at least one of those two. A malformed field, a duplicate member or a
    mismatch is :class:`InvalidPayload` (``content_digest_mismatch``); no field, no check.

    ::

        digest = RequestDigest(headers.get("Content-Digest"))
        for chunk in body_chunks:
            digest.update(chunk)
        digest.check()
    """

    def __init__(self, value: str | None) -> None:
        self.present = value is not None
        self._hashes: list[tuple[Any, bytes]] = []
        self._well_formed = value is not None and self._parse(value)

    def _parse(self, value: str) -> bool:
        try:
            members = http_sf.parse(
                value.encode("latin-1"), tltype="dictionary", on_duplicate_key=_refuse_duplicate
            )
        except (http_sf.StructuredFieldError, ValueError, TypeError, UnicodeError):
            return False
        if not isinstance(members, dict):
            return False
        for algorithm, member in members.items():
            if algorithm in _DIGESTS:
                digest = member[0] if isinstance(member, tuple) else None
                if not isinstance(digest, bytes):
                    return False
                self._hashes.append((_DIGESTS[algorithm](), digest))
        return bool(self._hashes)

    def update(self, data: bytes | memoryview) -> None:
        for hash_object, _ in self._hashes:
            hash_object.update(data)

    def check(self) -> None:
        if not self.present:
            return
        matches = self._well_formed
        for hash_object, expected in self._hashes:
            matches &= constant_time.compare_digest(hash_object.digest(), expected)
        if not matches:
            raise InvalidPayload("content_digest_mismatch")


def _refuse_duplicate(name: str, context: str) -> None:
    raise ValueError(f"duplicate member {name!r} in Content-Digest")


class _Fields:
    """Header field lines as the library reads them: ``items()`` keeps repeated lines."""

    def __init__(self, lines: Iterable[tuple[str, str]]) -> None:
        self._lines = list(lines)

    def items(self) -> list[tuple[str, str]]:
        return self._lines

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(name for name, _ in self._lines))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and any(
            line.lower() == name.lower() for line, _ in self._lines
        )

    def __getitem__(self, name: str) -> str:
        values = [value for line, value in self._lines if line.lower() == name.lower()]
        if not values:
            raise KeyError(name)
        return ", ".join(values)


@dataclass(frozen=True)
class AnsweredRequest:
    """The parts of a request that a response signature covers, as that request was sent."""

    method: str
    headers: Sequence[tuple[str, str]] = ()
    url: str = field(default=_PLACEHOLDER_URL, repr=False)


@dataclass(frozen=True)
class _Response:
    status_code: int
    headers: _Fields
    request: _RequestView


@dataclass(frozen=True)
class _RequestView:
    method: str
    headers: _Fields
    url: str


def _view(
    status: int, response_headers: Iterable[tuple[str, str]], request: AnsweredRequest
) -> _Response:
    return _Response(
        status,
        _Fields(response_headers),
        _RequestView(request.method, _Fields(request.headers), request.url),
    )


def covered_components(request: AnsweredRequest) -> list[str]:
    """What a response to ``request`` covers: status, digests, method and the key header.

    A request header that a signature base cannot carry (not printable ASCII) is left out, so
    the answer is still signed; a client of ours then refuses it as unbound.
    """
    coverable = {
        name.lower()
        for name, value in request.headers
        if value.strip() and value.isascii() and value.replace("\t", " ").isprintable()
    }
    components = ['"@status"', '"content-digest"', '"@method";req']
    if "content-digest" in coverable:
        components.append('"content-digest";req')
    components.extend(f'"{name}";req' for name in KEY_HEADERS if name in coverable)
    return components


def answer_key(cek: bytes) -> bytes:
    """The HMAC key that binds a format S sealed answer to its request: HKDF-SHA256 of the
    request's CEK (which only the client and the server know), never the CEK itself."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_ANSWER_KEY_INFO).derive(cek)


def sign_response(
    key: PrivateKey | bytes,
    kid: str,
    *,
    status: int,
    body: bytes | Sequence[bytes],
    request: AnsweredRequest,
    created: float,
    refusal: str | None = None,
) -> list[tuple[str, str]]:
    """The ``Content-Digest``, ``Signature-Input`` and ``Signature`` headers of a response, and
    ``X-Hybrid-Refusal: <code>`` when it is flask-hybrid's refusal (``refusal``), covered too.

    ``key`` is the signing key (``rsa-v1_5-sha256``), or the :func:`answer_key` of the request's
    CEK (``hmac-sha256``, ``keyid`` :data:`CEK_KEYID`) for format S's sealed answers.

    A request part that cannot be covered (see :func:`covered_components`; a method that is
    not upper case) is left out rather than leaving the answer unsigned.
    """
    digest = content_digest(body)
    headers = [("Content-Digest", digest)]
    components = covered_components(request)
    if refusal is not None:
        headers.append((REFUSAL_HEADER, refusal))
        components.insert(2, f'"{REFUSAL_HEADER.lower()}"')
    if not _METHOD.fullmatch(request.method):  # a base carries no such method: leave it out
        components.remove('"@method";req')
    algorithm = HMAC_ALGORITHM if isinstance(key, bytes) else ALGORITHM
    params = (
        f"({' '.join(components)});created={int(created)};keyid={_sf_string(kid)}"
        f";alg={_sf_string(algorithm.algorithm_id)};tag={_sf_string(TAG)}"
    )
    base = _signature_base(components, status, dict(headers), request, params)
    if isinstance(key, bytes):
        mac = hmac.HMAC(key, hashes.SHA256())
        mac.update(base)
        signature = mac.finalize()
    else:
        signature = sign(key, base)
    return [
        *headers,
        ("Signature-Input", f"{LABEL}={params}"),
        ("Signature", f"{LABEL}=:{b64encode(signature)}:"),
    ]


def _signature_base(
    components: list[str],
    status: int,
    response_headers: Mapping[str, str],
    request: AnsweredRequest,
    params: str,
) -> bytes:
    """RFC 9421 §2.5's signature base of the components :func:`sign_response` covers.

    Written here rather than through ``http-message-signatures``, whose general resolver costs
    ~150 µs an answer (most of a plain request): the components are few and fixed. The tests
    hold the two bases equal, and every client verifies with the library or its own reading.
    """
    response_fields = {name.lower(): value for name, value in response_headers.items()}
    lines = []
    for component in components:
        name, _, parameter = component.partition(";")
        field_name = name.strip('"')
        if parameter:  # ;req: from the request as it was sent
            if field_name == "@method":
                value = request.method
            else:
                value = ", ".join(
                    line.strip(" \t")
                    for line_name, line in request.headers
                    if line_name.lower() == field_name
                )
        elif field_name == "@status":
            value = str(status)
        else:
            value = response_fields[field_name]
        lines.append(f"{component}: {value}")
    lines.append(f'"@signature-params": {params}')
    return "\n".join(lines).encode("ascii")


def _sf_string(value: str) -> str:
    """A Structured Field string (RFC 8941 §3.3.3); printable ASCII only."""
    if not (value.isascii() and value.isprintable()):
        raise ValueError("a signature parameter must be printable ASCII")
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _Keys(HTTPSignatureKeyResolver):
    def __init__(self, lookup: Callable[[str], PublicKey | None]) -> None:
        self._lookup = lookup

    def resolve_public_key(self, key_id: str) -> PublicKey | None:
        return self._lookup(key_id)

    def resolve_private_key(self, key_id: str) -> PrivateKey:  # pragma: no cover - verify only
        raise KeyError(key_id)


class _BoundVerifier(HTTPMessageVerifier):
    """RFC 9421 verification whose freshness comes from the request binding, not the clock.

    The covered request ``Content-Digest`` (of a body with a fresh IV, ``ek`` or ``jti``) or key
    header is unique to one request, so a valid signature over it was made for this very
    exchange; ``created`` must be there but is not compared with the local clock, so a client
    whose clock is off by more than the library's 5 s still verifies.
    """

    def validate_created_and_expires(self, sig_input: Any, max_age: Any = None) -> None:
        if type(sig_input.params.get("created")) is not int:
            raise InvalidSignature('the signature has no integer "created" parameter')


class VerifiedAnswer(NamedTuple):
    """What a verified answer signature says: the signing key, and the refusal it marks.

    ``refusal`` is the covered ``X-Hybrid-Refusal`` code (flask-hybrid's own refusal), or
    ``None``: only an answer whose code it names is a refusal to act on.
    """

    kid: str
    refusal: str | None


def verify_response(
    keys: Mapping[str, PublicKey] | Callable[[str], PublicKey | None],
    *,
    status: int,
    headers: Iterable[tuple[str, str]] | Mapping[str, str],
    body: bytes,
    request: AnsweredRequest,
    cek: bytes | None = None,
) -> VerifiedAnswer:
    """Check that an answer carries flask-hybrid's signature, bound to ``request``.

    With ``cek`` (a format S request's key), an ``hmac-sha256`` signature under its
    :func:`answer_key` is accepted too, as the server makes for S's sealed answers.

    ``request`` is the request *as the client sent it*; ``keys`` the server's signing keys by
    kid (or a lookup function); ``body`` the content as received. The ``hybrid`` signature must
    have ``tag="flask-hybrid"``, ``alg="rsa-v1_5-sha256"`` and a ``keyid`` that ``keys``
    resolves, and cover ``@status``, the answer's ``Content-Digest`` (which must match ``body``),
    and from ``request`` its method, its ``Content-Digest`` and its key header when it has one.
    Any defect raises :class:`InvalidSignature`.

    ::

        sent = AnsweredRequest("POST", [("Content-Digest", content_digest(body))])
        verified = verify_response(keys, status=401, headers=..., body=..., request=sent)
        verified.kid, verified.refusal  # e.g. ("cHGR83zg…", "unknown_key")
    """
    lookup = keys.get if isinstance(keys, Mapping) else keys
    sent = {name.lower() for name, _ in request.headers}
    if "content-digest" not in sent:
        raise InvalidSignature("the request carried no Content-Digest to bind the answer to")
    lines = list(headers.items()) if isinstance(headers, Mapping) else list(headers)
    if cek is not None:
        try:
            secret = answer_key(cek)
            return _verify(HMAC_ALGORITHM, {CEK_KEYID: secret}.get, status, lines, body, request)
        except InvalidSignature:
            pass  # then only the signing keys can vouch for it
    return _verify(ALGORITHM, lookup, status, lines, body, request)


def _verify(
    algorithm: type[Any],
    lookup: Callable[[str], Any],
    status: int,
    lines: list[tuple[str, str]],
    body: bytes,
    request: AnsweredRequest,
) -> VerifiedAnswer:
    sent = {name.lower() for name, _ in request.headers}
    required = [*_REQUIRED, *(f'"{name}";req' for name in KEY_HEADERS if name in sent)]
    verifier = _BoundVerifier(signature_algorithm=algorithm, key_resolver=_Keys(lookup))
    try:
        results = verifier.verify(
            _view(status, lines, request),
            max_age=None,
            expect_tag=TAG,
            expect_label=LABEL,
            require_components=required,
            body=body,
        )
    except (HTTPMessageSignaturesException, ValueError, TypeError) as error:
        raise InvalidSignature(str(error)) from None
    parameters = results[0].parameters
    if parameters.get("alg") != algorithm.algorithm_id:  # the library accepts its absence
        raise InvalidSignature(f"the signature does not name {algorithm.algorithm_id}")
    refusal = results[0].covered_components.get(f'"{REFUSAL_HEADER.lower()}"')
    return VerifiedAnswer(str(parameters["keyid"]), refusal)


__all__ = [
    "CEK_KEYID",
    "KEY_HEADERS",
    "LABEL",
    "REFUSAL_HEADER",
    "RESPONSE_HEADERS",
    "TAG",
    "AnsweredRequest",
    "InvalidSignature",
    "PublicKey",
    "RequestDigest",
    "VerifiedAnswer",
    "answer_key",
    "content_digest",
    "covered_components",
    "sign_response",
    "verify_response",
]
