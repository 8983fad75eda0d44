"""Request-bound response signatures (RFC 9421) over RFC 9530 content digests, sans-I/O.

A signature over a body alone proves only that the server once sent those bytes, and every
refusal of one code has the same bytes. These signatures also cover the request they answer
(its method, its ``Content-Digest`` and, for the bodiless forms, its key header), so a proxy
cannot pass an answer to one request off as the answer to another (PROTOCOL.md,
"Request-bound response signatures"). The signature base is built by the kept library
``http-message-signatures``; what is covered, and the RSA operation, are decided here.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from http_message_signatures import (
    HTTPMessageSignaturesException,
    HTTPMessageSigner,
    HTTPMessageVerifier,
    HTTPSignatureKeyResolver,
    InvalidSignature,
    algorithms,
)

from .encoding import b64encode
from .rsa import PrivateKey, PublicKey, sign

LABEL = "hybrid"
TAG = "flask-hybrid"
ALGORITHM = algorithms.RSA_V1_5_SHA256
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


def content_digest(body: bytes) -> str:
    """The RFC 9530 ``Content-Digest`` field value of ``body``: ``sha-256=:<b64>:``."""
    return f"sha-256=:{b64encode(hashlib.sha256(body).digest())}:"


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


def sign_response(
    key: PrivateKey,
    kid: str,
    *,
    status: int,
    body: bytes,
    request: AnsweredRequest,
    created: float,
    refusal: str | None = None,
) -> list[tuple[str, str]]:
    """The ``Content-Digest``, ``Signature-Input`` and ``Signature`` headers of a response, and
    ``X-Hybrid-Refusal: <code>`` when it is flask-hybrid's refusal (``refusal``), covered too.

    A request part that cannot be covered (see :func:`covered_components`; a method that is
    not upper case) is left out rather than leaving the answer unsigned.
    """
    digest = content_digest(body)
    headers = [("Content-Digest", digest)]
    components = covered_components(request)
    if refusal is not None:
        headers.append((REFUSAL_HEADER, refusal))
        components.insert(2, f'"{REFUSAL_HEADER.lower()}"')
    if not request.method.isupper():  # the library cannot cover such a method: leave it out
        components.remove('"@method";req')
        request = AnsweredRequest("GET", request.headers)
    signer = HTTPMessageSigner(signature_algorithm=ALGORITHM)
    prepared = signer.prepare(
        _view(status, headers, request),
        key_id=kid,
        created=datetime.datetime.fromtimestamp(int(created), tz=datetime.timezone.utc),
        label=LABEL,
        tag=TAG,
        covered_component_ids=components,
        use_existing_digest=True,
    )
    signature = sign(key, prepared.signature_base)
    return [
        *headers,
        ("Signature-Input", f"{LABEL}={prepared.signature_params}"),
        ("Signature", f"{LABEL}=:{b64encode(signature)}:"),
    ]


class _Keys(HTTPSignatureKeyResolver):
    def __init__(self, keys: Mapping[str, PublicKey]) -> None:
        self._keys = dict(keys)

    def resolve_public_key(self, key_id: str) -> PublicKey | None:
        return self._keys.get(key_id)

    def resolve_private_key(self, key_id: str) -> PrivateKey:  # pragma: no cover - verify only
        raise KeyError(key_id)


def verify_response(
    keys: Mapping[str, PublicKey],
    *,
    status: int,
    headers: Iterable[tuple[str, str]],
    body: bytes,
    request: AnsweredRequest,
) -> VerifiedAnswer:
    """Check that a response is signed by one of ``keys`` and answers ``request``.

    ``request`` is the request *as the client sent it*. Any defect (missing, malformed,
    unbound, wrong key, body not matching its digest) raises :class:`InvalidSignature`.
    """
    required = [*_REQUIRED]
    present = {name.lower() for name, _ in request.headers}
    required.extend(f'"{name}";req' for name in KEY_HEADERS if name in present)
    if "content-digest" not in present:
        raise InvalidSignature("the request carried no Content-Digest to bind the answer to")
    verifier = HTTPMessageVerifier(signature_algorithm=ALGORITHM, key_resolver=_Keys(keys))
    verifier.require_created = True
    message = _view(status, headers, request)
    try:
        results = verifier.verify(
            message,
            max_age=None,
            expect_tag=TAG,
            require_components=required,
            body=body,
        )
    except HTTPMessageSignaturesException as error:
        raise InvalidSignature(str(error)) from None
    covered = results[0].covered_components
    refusal = covered.get(f'"{REFUSAL_HEADER.lower()}"')
    return VerifiedAnswer(str(results[0].parameters["keyid"]), refusal)


@dataclass(frozen=True)
class VerifiedAnswer:
    """What a verified signature says: who signed, and whether it is flask-hybrid's refusal
    (the covered ``X-Hybrid-Refusal`` code, else ``None``)."""

    kid: str
    refusal: str | None


__all__ = [
    "KEY_HEADERS",
    "LABEL",
    "REFUSAL_HEADER",
    "RESPONSE_HEADERS",
    "TAG",
    "AnsweredRequest",
    "InvalidSignature",
    "PublicKey",
    "VerifiedAnswer",
    "content_digest",
    "covered_components",
    "sign_response",
    "verify_response",
]
