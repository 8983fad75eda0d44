"""The requests the HTTP bench sends, built ahead of the timed runs with ``cryptography`` alone.

Built from docs/PROTOCOL.md, like ``tests/protocol_client.py``, rather than from flask-hybrid's
own client code, so that a refactoring of the server's formats cannot change what is measured.
Each builder returns the body of one request; what must differ from one request to the next (a
J ``jti``, a fresh RSA-wrapped CEK, an IV) differs. Every S, E and J request carries
``Content-Digest``, as flask-hybrid's clients send it. Format H's requests are sealed with
``flask_hybrid.core.ehbp.RequestSealer`` (the client half of the sans-I/O framing, tested
against the published EHBP clients): each has its own HPKE encapsulation, so its own
``Ehbp-Encapsulated-Key`` header, and no ``Content-Digest``, as EHBP's clients send none.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from flask_hybrid.core.ehbp import ENCAPSULATED_KEY_HEADER, RequestSealer

OAEP_SHA256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
PKCS1V15 = padding.PKCS1v15()
ECHO_PATH = "/api/echo"
#: Plain echoes that also make one Redis call, as J (SET NX EX of a jti record) and S (GET of a
#: session record) do: what the store's round trip alone costs (``bench/wsgi.py``).
FLOOR_PATHS = {"set": "/bench/echo-set", "get": "/bench/echo-get"}

ORDER = json.dumps(
    {
        "order": {
            "id": 1042,
            "customer": "ACME Corporation, purchasing",
            "lines": [{"sku": f"SKU-{n:04d}", "qty": n, "price": "9.90"} for n in range(20)],
        }
    },
    separators=(",", ":"),
).encode()
"""The 1 KB purchase order every 1 KB case sends."""


def big_document(size: int) -> bytes:
    """A JSON document of exactly ``size`` bytes: a few attachments as long base64-like text.

    An upload-like shape: cheap for the app to parse (a few long strings), so that what grows
    with the body is the transport and crypto work, not the app's object tree.
    """
    head, tail = b'{"attachments":[', b"]}"
    parts: list[bytes] = []
    remaining, number = size - len(head) - len(tail), 0
    while remaining > 0:
        frame = b'{"name":"part-%03d","data":""}' % number
        chunk = min(1024 * 1024, remaining - len(frame) - (1 if parts else 0))
        if chunk <= 0:  # too little left for another part: pad the last one
            break
        parts.append(b'{"name":"part-%03d","data":"%s"}' % (number, b"A" * chunk))
        remaining -= len(parts[-1]) + (1 if len(parts) > 1 else 0)
        number += 1
    document = head + b",".join(parts) + tail
    if len(document) < size:  # widen the last string to the exact size
        missing = size - len(document)
        document = document[: -len(b'"}]}')] + b"A" * missing + b'"}]}'
    return document


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def content_digest(body: bytes) -> str:
    """RFC 9530 ``Content-Digest`` of a body as sent."""
    return f"sha-256=:{b64(hashlib.sha256(body).digest())}:"


def _compact(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


@dataclass
class Case:
    """One kind of request: its static headers, its bodies, and headers of each request.

    ``each`` (when not empty) holds one dict of headers per body, e.g. format H's
    ``Ehbp-Encapsulated-Key``; ``digest`` says whether a ``Content-Digest`` goes with each body.
    """

    name: str
    headers: dict[str, str]
    bodies: list[bytes] = field(default_factory=list)
    path: str = ECHO_PATH
    each: list[dict[str, str]] = field(default_factory=list)
    digest: bool = True


class Workload:
    """Request bodies for every format, for one server's identity key and one S session."""

    def __init__(self, identity_public: rsa.RSAPublicKey, kid: str) -> None:
        self.identity_public = identity_public
        self.kid = kid
        self.session_public: rsa.RSAPublicKey | None = None
        self.session_headers: dict[str, str] = {}
        self._reused_j_cek = AESGCM.generate_key(256)
        self._reused_j_ek = identity_public.encrypt(self._reused_j_cek, OAEP_SHA256)
        self._reused_s_cek = AESGCM.generate_key(256)
        self._reused_s_ek = b""
        self.hpke_public: bytes | None = None  # the server's X25519 key, for format H

    # -- format S ------------------------------------------------------------------------------
    def start_session(self, token: str, public_key: rsa.RSAPublicKey, device_id: str) -> None:
        """Use the session of a handshake for format S requests."""
        self.session_public = public_key
        self.session_headers = {"Authorization": f"Bearer {token}", "X-Device-Id": device_id}
        self._reused_s_ek = public_key.encrypt(self._reused_s_cek, OAEP_SHA256)

    def s_body(self, plaintext: bytes, *, reuse: bool) -> bytes:
        if self.session_public is None:
            raise RuntimeError("format S needs start_session() first")
        cek = self._reused_s_cek if reuse else AESGCM.generate_key(256)
        wrapped = self._reused_s_ek if reuse else self.session_public.encrypt(cek, OAEP_SHA256)
        iv = os.urandom(12)
        sealed = AESGCM(cek).encrypt(iv, plaintext, None)
        return _compact(
            {
                "encryptedAesKey": b64(wrapped),
                "encryptedData": b64(sealed[:-16]),
                "iv": b64(iv),
                "authTag": b64(sealed[-16:]),
            }
        )

    # -- format E ------------------------------------------------------------------------------
    def e_body(self, plaintext: bytes) -> bytes:
        """JSEncrypt's form: PKCS#1 v1.5 over the text b64(CEK)."""
        cek = AESGCM.generate_key(256)
        wrapped = self.identity_public.encrypt(b64(cek).encode("ascii"), PKCS1V15)
        iv = os.urandom(12)
        sealed = AESGCM(cek).encrypt(iv, plaintext, None)
        return _compact(
            {"alg": "RSA+AES-GCM", "ek": b64(wrapped), "iv": b64(iv), "ct": b64(sealed)}
        )

    # -- format J ------------------------------------------------------------------------------
    def j_body(self, plaintext: bytes, *, reuse: bool, path: str = ECHO_PATH) -> bytes:
        header = {
            "alg": "RSA-OAEP-256",
            "enc": "A256GCM",
            "kid": self.kid,
            "htm": "POST",
            "htu": path,
            "iat": int(time.time()),
            "jti": b64url(os.urandom(16)),
            "cty": "json",
        }
        cek = self._reused_j_cek if reuse else AESGCM.generate_key(256)
        wrapped = self._reused_j_ek if reuse else self.identity_public.encrypt(cek, OAEP_SHA256)
        protected = b64url(_compact(header))
        iv = os.urandom(12)
        sealed = AESGCM(cek).encrypt(iv, plaintext, protected.encode("ascii"))
        segments = (
            protected,
            b64url(wrapped),
            b64url(iv),
            b64url(sealed[:-16]),
            b64url(sealed[-16:]),
        )
        return ".".join(segments).encode("ascii")

    # -- format H ------------------------------------------------------------------------------
    def h_request(self, plaintext: bytes) -> tuple[dict[str, str], bytes, RequestSealer]:
        """A fresh HPKE encapsulation: its header, the framed body, and the sealer (to open the
        answer with)."""
        if self.hpke_public is None:
            raise RuntimeError("format H needs the server's HPKE public key (hpke_public)")
        sealer = RequestSealer(self.hpke_public)
        return {ENCAPSULATED_KEY_HEADER: sealer.header_value}, sealer.seal(plaintext), sealer

    # -- the cases -----------------------------------------------------------------------------
    def case(self, name: str, count: int) -> Case:
        """``count`` requests of the 1 KB case ``name`` (see :data:`CASES`)."""
        json_type = {"Content-Type": "application/json"}
        encrypted = {"Content-Type": "application/json", "X-Encryption-Enabled": "true"}
        jose = {"Content-Type": "application/jose"}
        if name == "plain":
            return Case(name, json_type, [ORDER] * 16)  # no need to differ; one per thread
        if name.startswith("plain+"):  # plain + one store round trip (see FLOOR_PATHS)
            return Case(name, json_type, [ORDER] * 16, path=FLOOR_PATHS[name.partition("+")[2]])
        if name == "J reused CEK":
            return Case(name, jose, [self.j_body(ORDER, reuse=True) for _ in range(count)])
        if name == "J fresh CEK":
            return Case(name, jose, [self.j_body(ORDER, reuse=False) for _ in range(count)])
        if name == "S fresh CEK":
            bodies = [self.s_body(ORDER, reuse=False) for _ in range(count)]
            return Case(name, {**encrypted, **self.session_headers}, bodies)
        if name == "S reused CEK":
            bodies = [self.s_body(ORDER, reuse=True) for _ in range(count)]
            return Case(name, {**encrypted, **self.session_headers}, bodies)
        if name == "E signed":
            return Case(name, encrypted, [self.e_body(ORDER) for _ in range(count)])
        if name == "E sealed":
            headers = {**encrypted, "X-Encrypt-Response": "true"}
            return Case(name, headers, [self.e_body(ORDER) for _ in range(count)])
        if name == "H fresh key per request":
            requests = [self.h_request(ORDER)[:2] for _ in range(count)]
            return Case(
                name,
                json_type,
                [body for _, body in requests],
                each=[headers for headers, _ in requests],
                digest=False,
            )
        raise ValueError(f"unknown case {name!r}")


@dataclass(frozen=True)
class CaseSpec:
    """What a 1 KB case costs beyond plain (RSA private operations) and its target."""

    name: str
    rsa_ops: int
    target: float
    target_of: str  # "plain" or "floor"
    description: str
    #: The store round trip each request makes beyond plain ("set": J's jti record, "get": S's
    #: session read); its floor is measured as plain plus that one Redis call (FLOOR_PATHS).
    store_trip: str = ""


CASES: tuple[CaseSpec, ...] = (
    CaseSpec("J reused CEK", 0, 0.85, "plain", "format J, CEK unwrapped once and cached", "set"),
    CaseSpec(
        "J fresh CEK", 1, 0.90, "floor", "format J, a new RSA-wrapped CEK each request", "set"
    ),
    CaseSpec(
        "S fresh CEK", 1, 0.90, "floor", "format S, a new RSA-wrapped CEK each request", "get"
    ),
    CaseSpec("S reused CEK", 0, 0.85, "plain", "format S, one CEK for the session", "get"),
    CaseSpec("E signed", 2, 0.90, "floor", "format E (PKCS#1 v1.5), answer in clear, RSA-signed"),
    CaseSpec("E sealed", 1, 0.90, "floor", "format E (PKCS#1 v1.5), X-Encrypt-Response"),
    CaseSpec(
        "H fresh key per request",
        0,
        0.80,
        "plain",
        "format H (EHBP), a new HPKE encapsulation each",
    ),
)
