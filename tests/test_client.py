"""The Python client: known-answer vectors, an in-process fake server, and the live demo app.

Tests named ``test_live_*`` need the ``live_server`` fixture of ``conftest.py`` (a real HTTP
server running the demo app); the others run offline.
"""

from __future__ import annotations

import json
import os
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests
from http_message_signatures import (
    ContentDigest,
    HTTPMessageSigner,
    MappingKeyResolver,
    algorithms,
)
from requests.adapters import BaseAdapter, HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers

from flask_hybrid import client as client_module
from flask_hybrid.client import (
    EncryptionRequiredError,
    HybridClientError,
    HybridSession,
    InvalidPayloadError,
    InvalidSessionError,
    PayloadTooLargeError,
    RateLimitedError,
    ReplayedRequestError,
    ResponseError,
    SignatureError,
    StoreUnavailableError,
    UnknownKeyError,
)
from flask_hybrid.core import formats, jwe, rsa
from flask_hybrid.core.encoding import (
    b64decode,
    b64encode,
    b64url_decode,
    b64url_encode,
    dumps_compact,
    loads_json_object,
)
from flask_hybrid.core.keyring import KeyRing, parse_jwks
from flask_hybrid.errors import ERRORS, HybridError, InvalidSession, UnknownKey, error_body

VECTORS_DIR = Path(__file__).resolve().parent / "vectors"
FAKE = "http://fake.test"


def load(name: str) -> Any:
    return json.loads((VECTORS_DIR / f"{name}.json").read_text(encoding="utf-8"))


KEYS = load("keys")
IDENTITY_1 = rsa.load_private_key(KEYS["identity_1"]["private_pem"])
IDENTITY_2 = rsa.load_private_key(KEYS["identity_2"]["private_pem"])
SESSION_KEY = rsa.load_private_key(KEYS["session"]["private_pem"])
KID_1, KID_2 = KEYS["identity_1"]["kid"], KEYS["identity_2"]["kid"]


def make_response(
    status: int, body: bytes, headers: dict[str, str], request: Any = None
) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = body
    response.headers = CaseInsensitiveDict({"Content-Length": str(len(body)), **headers})
    response.encoding = get_encoding_from_headers(response.headers)
    response.url = request.url if request is not None else f"{FAKE}/api/echo"
    response.request = request
    response.reason = "fake"
    return response


def signed_headers(body: bytes, key: rsa.PrivateKey = IDENTITY_1, kid: str = KID_1) -> dict:
    """The body-only ``X-Response-Signature`` the server keeps for JSEncrypt clients."""
    return {"X-Response-Signature": b64encode(rsa.sign(key, body)), "X-Response-Signature-Kid": kid}


COVERED = ('"@status"', '"content-digest"', '"@method";req', '"content-digest";req')


def bound_signature(
    request: requests.PreparedRequest,
    status: int,
    body: bytes,
    *,
    key: rsa.PrivateKey = IDENTITY_1,
    kid: str = KID_1,
    covered: Sequence[str] | None = None,
    tag: str = "flask-hybrid",
    label: str = "hybrid",
    created: int | None = None,
    include_alg: bool = True,
    refusal: str | None = None,
) -> dict[str, str]:
    """RFC 9421 headers (``Content-Digest``, ``Signature-Input``, ``Signature``, and for a
    ``refusal`` the covered ``X-Hybrid-Refusal``) as the server signs an answer to ``request``,
    made with http-message-signatures, not the client's code."""
    request_headers = {name: str(value) for name, value in request.headers.items()}
    if covered is None:
        covered = [
            *COVERED[:2],
            *(['"x-hybrid-refusal"'] if refusal is not None else []),
            *COVERED[2:],
            *(
                f'"{name.lower()}";req'
                for name in ("X-Hybrid-JWE", "X-Encrypted-Aes-Key")
                if name in request.headers
            ),
        ]
    marker = {} if refusal is None else {"X-Hybrid-Refusal": refusal}
    answer = SimpleNamespace(
        status_code=status,
        headers={"Content-Digest": ContentDigest.create(body), **marker},
        request=SimpleNamespace(method=request.method, url=request.url, headers=request_headers),
    )
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.RSA_V1_5_SHA256,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={kid: key}),
    )
    signer.sign(
        answer,
        key_id=kid,
        label=label,
        tag=tag,
        covered_component_ids=covered,
        use_existing_digest=True,
        include_alg=include_alg,
        created=None if created is None else datetime.fromtimestamp(created, timezone.utc),
    )
    return dict(answer.headers)


def refusal_code(status: int, body: bytes) -> str | None:
    """The error-table code of an answer that is one of the server's refusals."""
    try:
        code = json.loads(body).get("error")
    except (ValueError, AttributeError):
        return None
    return code if code in ERRORS and ERRORS[code].code == status else None


def refusal(code: str) -> tuple[int, dict[str, str], bytes]:
    """A refusal as the server sends it; the fake server adds the RFC 9421 signature."""
    error = ERRORS[code]
    body = error_body(error)
    return error.code, {"Content-Type": "application/json", **signed_headers(body)}, body


# --- known-answer vectors ----------------------------------------------------------------------
def sealed_exchange(cek_hex: str, jti: str | None = None) -> Any:
    return client_module._Exchange("sealed", bytes.fromhex(cek_hex), jti)


@pytest.mark.parametrize(
    "vector",
    [v for v in load("format_s") if v["kind"] == "request"],
    ids=lambda v: v["description"],
)
def test_session_request_vectors_seal_byte_for_byte(vector: dict[str, Any]) -> None:
    envelope = vector["request"]["envelope"]
    body = formats.seal_session_request(
        bytes.fromhex(vector["cek_hex"]),
        b64decode(envelope["encryptedAesKey"]),
        vector["request"]["plaintext"].encode(),
        iv=bytes.fromhex(vector["request"]["iv_hex"]),
    )
    assert json.loads(body) == envelope


@pytest.mark.parametrize("vector", load("format_s"), ids=lambda v: v["description"])
def test_session_response_vectors_open(vector: dict[str, Any]) -> None:
    expected = vector["response"]["plaintext"].encode()
    sealed = dumps_compact(vector["response"]["envelope"])
    response = make_response(
        vector["response"]["status"],
        sealed,
        {
            "Content-Type": "application/json",
            "Content-Length": str(len(sealed)),
            "X-Encryption-Enabled": "true",
            "X-Plaintext-Content-Type": "application/json; charset=utf-8",
            "X-Other": "kept",
        },
    )
    with HybridSession(FAKE, format="session") as session:
        opened = session._finish(response, sealed_exchange(vector["cek_hex"]), {})
    assert opened.status_code == vector["response"]["status"]
    assert opened.content == expected
    assert opened.json() == json.loads(expected)
    assert opened.headers["Content-Type"] == "application/json; charset=utf-8"
    assert opened.headers["Content-Length"] == str(len(expected))
    assert opened.headers["X-Other"] == "kept"
    assert "X-Encryption-Enabled" not in opened.headers
    assert "X-Plaintext-Content-Type" not in opened.headers


def test_session_response_vector_under_another_key_is_a_response_error() -> None:
    vector = load("format_s")[0]
    sealed = dumps_compact(vector["response"]["envelope"])
    response = make_response(200, sealed, {"X-Encryption-Enabled": "true"})
    with HybridSession(FAKE, format="session") as session, pytest.raises(ResponseError) as caught:
        session._finish(response, sealed_exchange("11" * 32), {})
    assert caught.value.code == "invalid_response"
    assert caught.value.status == 200


@pytest.mark.parametrize("vector", load("format_e"), ids=lambda v: v["description"])
def test_envelope_vectors_seal_and_their_responses_open(vector: dict[str, Any]) -> None:
    cek = bytes.fromhex(vector["cek_hex"])
    envelope = vector["envelope"]
    body = formats.seal_envelope_request(
        envelope["alg"],
        b64decode(envelope["ek"]),
        cek,
        vector["plaintext"].encode(),
        kid=envelope.get("kid"),
        iv=bytes.fromhex(vector["iv_hex"]),
    )
    assert json.loads(body) == envelope

    sealed = vector["sealed_response"]
    response = make_response(
        200,
        dumps_compact(sealed["envelope"]),
        {"Content-Type": "application/json", "X-Plaintext-Content-Type": "application/json"},
    )
    with HybridSession(FAKE, format="envelope") as session:
        opened = session._finish(response, sealed_exchange(vector["cek_hex"]), {})
    assert opened.content == sealed["plaintext"].encode()
    assert opened.headers["Content-Type"] == "application/json"


@pytest.mark.parametrize("padding", ["oaep", "pkcs1v15"])
def test_wrap_envelope_key_forms(padding: str) -> None:
    cek = os.urandom(32)
    alg, wrapped_key = formats.wrap_envelope_key(IDENTITY_1.public_key(), cek, padding=padding)  # type: ignore[arg-type]
    assert formats.ENVELOPE_ALGS[alg] is (padding == "oaep")
    if padding == "oaep":
        assert IDENTITY_1.decrypt(wrapped_key, rsa.OAEP_SHA256) == cek
    else:  # the JSEncrypt form: the b64 text of the CEK
        assert IDENTITY_1.decrypt(wrapped_key, rsa.PKCS1V15) == b64encode(cek).encode()
    assert rsa.unwrap_cek_or_random(IDENTITY_1, wrapped_key, oaep=padding == "oaep") == cek


@pytest.mark.parametrize("vector", load("format_j"), ids=lambda v: v["description"])
def test_jwe_vectors_seal_byte_for_byte(vector: dict[str, Any]) -> None:
    header = json.loads(vector["protected_header"])
    token = jwe.encrypt(
        header,
        vector["plaintext"].encode(),
        bytes.fromhex(vector["cek_hex"]),
        encrypted_key=b64url_decode(vector["jwe"].split(".")[1]),
        iv=bytes.fromhex(vector["iv_hex"]),
    )
    assert token == vector["jwe"]


@pytest.mark.parametrize("vector", load("format_j"), ids=lambda v: v["description"])
def test_jwe_response_vectors_open(vector: dict[str, Any]) -> None:
    jti = json.loads(vector["protected_header"])["jti"]
    status = vector["response"]["status"]
    token = vector["response"]["jwe"].encode()
    response = make_response(status, token, {"Content-Type": "application/jose"})
    with HybridSession(FAKE, format="jwe") as session:
        opened = session._finish(response, sealed_exchange(vector["cek_hex"], jti), {})
    assert opened.status_code == status
    assert opened.content == vector["response"]["plaintext"].encode()
    assert opened.headers["Content-Type"] == "application/json"
    assert opened.encoding == "utf-8"


@pytest.mark.parametrize("defect", ["status", "jti"])
def test_jwe_response_for_another_status_or_request_is_a_response_error(defect: str) -> None:
    vector = load("format_j")[0]
    jti = json.loads(vector["protected_header"])["jti"]
    status = 201 if defect == "status" else 200
    if defect == "jti":
        jti = b64url_encode(os.urandom(16))
    response = make_response(status, vector["response"]["jwe"].encode(), {})
    with HybridSession(FAKE, format="jwe") as session, pytest.raises(ResponseError):
        session._finish(response, sealed_exchange(vector["cek_hex"], jti), {})


def test_parse_jwks_computes_kids_and_skips_bad_entries() -> None:
    ring = KeyRing([IDENTITY_1, IDENTITY_2])
    document = ring.jwks()
    document["keys"][1]["kid"] = KID_1  # a stated kid that is not the key's thumbprint
    document["keys"].insert(0, {"kty": "EC", "kid": "x"})
    keys = parse_jwks(json.dumps(document).encode())
    assert list(keys) == [KID_1]
    with pytest.raises(HybridError):
        parse_jwks(b'{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}')


def test_retry_after_forms() -> None:
    assert client_module._retry_after("7", 0.0) == 7.0
    assert client_module._retry_after("Thu, 01 Jan 1970 00:01:40 GMT", 40.0) == 60.0
    assert client_module._retry_after("soon", 0.0) is None
    assert client_module._retry_after(None, 0.0) is None


# --- an in-process fake server on the core, mounted as a transport adapter --------------------
class FakeServer(BaseAdapter):
    """A small stand-in for the flask-hybrid server (S, E, J; vector keys), for offline tests."""

    def __init__(self) -> None:
        super().__init__()
        self.ring = KeyRing([IDENTITY_1, IDENTITY_2])
        self.jwks_documents: list[dict[str, Any]] = []  # served first, one per fetch
        self.sessions: dict[str, tuple[str, str]] = {}  # token → (session id, device id)
        self.ttl = 3600
        # Whether to add the RFC 9421 signature to an answer (not to the key set, nor to an
        # answer that already has a Signature-Input): every answer by default.
        self.sign_when: Callable[[requests.PreparedRequest], bool] = lambda request: True
        self.signing_key: tuple[rsa.PrivateKey, str] = (IDENTITY_1, KID_1)
        self.mark_refusals = True  # the signed X-Hybrid-Refusal of the server's own refusals
        self.override: Callable[[requests.PreparedRequest], tuple | None] | None = None
        self.sent: list[requests.PreparedRequest] = []

    def close(self) -> None:
        pass

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.sent if r.method == method and r.path_url == path)

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        self.sent.append(request)
        answer = self.override(request) if self.override is not None else None
        if answer is None:
            try:
                answer = self.route(request)
            except HybridError as error:
                answer = refusal(error.error)
        status, headers, body = answer
        path = urlsplit(request.url).path
        signed = path == "/hybrid/jwks.json" or "Signature-Input" in headers
        if not signed and self.sign_when(request):
            key, kid = self.signing_key
            marked = refusal_code(status, body) if self.mark_refusals else None
            signature = bound_signature(request, status, body, key=key, kid=kid, refusal=marked)
            headers = {**headers, **signature}
        return make_response(status, body, headers, request)

    def route(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], bytes]:
        path, method, headers = urlsplit(request.url).path, request.method, request.headers
        body = request.body or b""
        if path == "/hybrid/jwks.json":
            document = self.jwks_documents.pop(0) if self.jwks_documents else self.ring.jwks()
            return 200, {"Content-Type": "application/json"}, dumps_compact(document)
        if path == "/hybrid/session" and method == "POST":
            cek, device_id = formats.parse_handshake(loads_json_object(body))
            token, session_id = secrets.token_urlsafe(16), str(uuid.uuid4())
            self.sessions[token] = (session_id, device_id)
            document = {
                "token": token,
                "publicKey": rsa.public_pem(SESSION_KEY),
                "sessionId": session_id,
                "expiresIn": self.ttl,
            }
            sealed = formats.seal_session(cek, dumps_compact(document))
            return 201, {"Content-Type": "application/json", **signed_headers(sealed)}, sealed
        if path == "/hybrid/session" and method == "DELETE":
            self.sessions.pop(headers.get("Authorization", "").partition(" ")[2], None)
            return 204, {}, b""
        if headers.get("Content-Type") == "application/jose" or "X-Hybrid-JWE" in headers:
            return self.jwe(request, body)
        if headers.get("X-Encryption-Enabled") == "true":
            if "X-Encrypted-Aes-Key" in headers or b"encryptedAesKey" in body:
                return self.session(request, body)
            return self.envelope(request, body)
        return self.app(method, path, body)

    def app(self, method: str, path: str, body: bytes) -> tuple[int, dict[str, str], bytes]:
        if path == "/api/echo" and method == "POST":
            answer = dumps_compact({"received": json.loads(body)})
            return 200, {"Content-Type": "application/json"}, answer
        if path == "/api/echo":
            return 405, {"Content-Type": "text/html; charset=utf-8"}, b"<p>Method Not Allowed</p>"
        return 404, {"Content-Type": "application/json"}, b'{"error":"not found"}'

    def jwe(self, request: requests.PreparedRequest, body: bytes) -> tuple:
        in_header = "X-Hybrid-JWE" in request.headers
        token = jwe.parse_compact(request.headers["X-Hybrid-JWE"] if in_header else body.decode())
        binding = formats.read_request_binding(token.header)
        identity_key = self.ring.get(binding.kid)
        if identity_key is None:
            raise UnknownKey
        cek = jwe.unwrap_key(token, identity_key.private_key)
        plaintext = formats.open_request(token, cek, allow_empty=in_header)
        formats.check_request_binding(
            binding, method=request.method, target=request.path_url, now=binding.iat, window=300
        )
        status, headers, answer = self.app(request.method, urlsplit(request.url).path, plaintext)
        sealed = formats.seal_response(
            cek,
            answer,
            request_jti=binding.jti,
            status=status,
            content_type=headers.get("Content-Type"),
        )
        return status, {"Content-Type": "application/jose"}, sealed.encode()

    def session(self, request: requests.PreparedRequest, body: bytes) -> tuple:
        token = request.headers.get("Authorization", "").partition(" ")[2]
        live = self.sessions.get(token)
        if live is None or live[1] != request.headers.get("X-Device-Id"):
            raise InvalidSession
        if body:
            envelope = formats.parse_session_envelope(loads_json_object(body))
            cek = rsa.unwrap_oaep(SESSION_KEY, envelope.wrapped_key)
            plaintext = formats.open_session_envelope(envelope, cek)
        else:
            wrapped_key = formats.parse_wrapped_key_header(request.headers["X-Encrypted-Aes-Key"])
            cek, plaintext = rsa.unwrap_oaep(SESSION_KEY, wrapped_key), b""
        status, headers, answer = self.app(request.method, urlsplit(request.url).path, plaintext)
        sealed_headers = {
            "Content-Type": "application/json",
            "X-Encryption-Enabled": "true",
            "X-Plaintext-Content-Type": headers["Content-Type"],
        }
        return status, sealed_headers, formats.seal_session(cek, answer)

    def envelope(self, request: requests.PreparedRequest, body: bytes) -> tuple:
        envelope = formats.parse_envelope(loads_json_object(body))
        cek, plaintext = formats.open_envelope(envelope, self.ring)
        status, headers, answer = self.app(request.method, urlsplit(request.url).path, plaintext)
        if request.headers.get("X-Encrypt-Response") == "true":
            sealed_headers = {
                "Content-Type": "application/json",
                "X-Plaintext-Content-Type": headers["Content-Type"],
            }
            return status, sealed_headers, formats.seal_envelope_response(cek, answer)
        return status, {**headers, **signed_headers(answer)}, answer


@pytest.fixture
def fake() -> FakeServer:
    return FakeServer()


@pytest.fixture
def open_session(fake: FakeServer) -> Iterator[Callable[..., HybridSession]]:
    """HybridSessions on the fake server, closed at the end of the test."""
    sessions: list[HybridSession] = []

    def factory(**options: Any) -> HybridSession:
        session = HybridSession(FAKE, **options)
        session.mount(FAKE, fake)
        sessions.append(session)
        return session

    yield factory
    for session in sessions:
        session.close()


ALL_FORMATS = [
    pytest.param({"format": "jwe"}, id="jwe"),
    pytest.param({"format": "jwe", "reuse_key": True}, id="jwe-reuse"),
    pytest.param({"format": "session"}, id="session"),
    pytest.param({"format": "session", "reuse_key": True}, id="session-reuse"),
    pytest.param({"format": "envelope"}, id="envelope-oaep"),
    pytest.param({"format": "envelope", "envelope_padding": "pkcs1v15"}, id="envelope-pkcs1v15"),
    pytest.param({"format": "envelope", "encrypt_response": False}, id="envelope-signed"),
]


@pytest.mark.parametrize("options", ALL_FORMATS)
def test_round_trip_on_fake_server(open_session: Callable, options: dict[str, Any]) -> None:
    session = open_session(**options)
    for count in range(2):
        response = session.post("/api/echo", json={"a": count, "name": "Zoë"})
        assert response.status_code == 200
        assert response.json() == {"received": {"a": count, "name": "Zoë"}}
        assert response.headers["Content-Type"] == "application/json"
        assert response.headers["Content-Length"] == str(len(response.content))


@pytest.mark.parametrize("reuse_key", [True, False])
def test_jwe_reuse_key_keeps_one_wrapped_key(
    open_session: Callable, fake: FakeServer, reuse_key: bool
) -> None:
    session = open_session(format="jwe", reuse_key=reuse_key)
    session.post("/api/echo", json={})
    session.post("/api/echo", json={})
    tokens = [r.body.decode().split(".") for r in fake.sent if r.path_url == "/api/echo"]
    headers = [json.loads(b64url_decode(token[0])) for token in tokens]
    assert (tokens[0][1] == tokens[1][1]) is reuse_key
    assert tokens[0][2] != tokens[1][2]  # fresh IV
    assert headers[0]["jti"] != headers[1]["jti"]
    assert headers[0]["cty"] == "json"
    assert len(b64url_decode(headers[0]["jti"])) >= 16


@pytest.mark.parametrize(
    ("path", "params"),
    [("/api/echo?x=1&y=é", None), ("/api/echo", {"q": "a b/ü"}), ("api/echo?", None)],
)
def test_jwe_htu_is_the_target_as_sent(
    open_session: Callable, fake: FakeServer, path: str, params: Any
) -> None:
    session = open_session(format="jwe")
    assert session.post(path, params=params, json=[1]).json() == {"received": [1]}
    sent = fake.sent[-1]
    assert json.loads(b64url_decode(sent.body.decode().split(".")[0]))["htu"] == sent.path_url


@pytest.mark.parametrize("options", ALL_FORMATS[:4])
def test_bodiless_get_comes_back_sealed_with_the_app_status(
    open_session: Callable, fake: FakeServer, options: dict[str, Any]
) -> None:
    session = open_session(**options)
    response = session.get("/api/echo")
    assert response.status_code == 405
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    assert response.text == "<p>Method Not Allowed</p>"
    sent = fake.sent[-1]
    assert sent.body is None
    assert ("X-Hybrid-JWE" in sent.headers) is (options["format"] == "jwe")
    assert ("X-Encrypted-Aes-Key" in sent.headers) is (options["format"] == "session")


def test_sealed_app_errors_are_responses_not_exceptions(open_session: Callable) -> None:
    for options in ({"format": "jwe"}, {"format": "session"}, {"format": "envelope"}):
        response = open_session(**options).post("/api/missing", json={})
        assert response.status_code == 404
        assert response.json() == {"error": "not found"}


def test_lost_session_is_reestablished_once(open_session: Callable, fake: FakeServer) -> None:
    session = open_session(format="session", reuse_key=True)
    session.post("/api/echo", json={})
    first = session.session_id
    fake.sessions.clear()  # the server forgot it
    assert session.post("/api/echo", json={"again": True}).json() == {"received": {"again": True}}
    assert session.session_id not in (None, first)
    assert fake.count("POST", "/hybrid/session") == 2
    assert fake.count("POST", "/api/echo") == 3


def test_invalid_session_twice_raises(open_session: Callable, fake: FakeServer) -> None:
    session = open_session(format="session")
    fake.override = lambda r: refusal("invalid_session") if r.path_url == "/api/echo" else None
    with pytest.raises(InvalidSessionError) as caught:
        session.post("/api/echo", json={})
    assert caught.value.status == 401
    assert fake.count("POST", "/hybrid/session") == 2


def test_expired_session_is_renewed(fake: FakeServer, open_session: Callable) -> None:
    now = [1_000_000.0]
    fake.ttl = 60
    session = open_session(format="session", clock=lambda: now[0])
    session.post("/api/echo", json={})
    now[0] += 30
    session.post("/api/echo", json={})
    assert fake.count("POST", "/hybrid/session") == 1
    now[0] += 25  # within the renewal margin of the 60 s session
    session.post("/api/echo", json={})
    assert fake.count("POST", "/hybrid/session") == 2


def test_close_deletes_the_session_and_a_new_request_handshakes(
    open_session: Callable, fake: FakeServer
) -> None:
    session = open_session(format="session")
    session.post("/api/echo", json={})
    token = fake.sent[-1].headers["Authorization"]
    session.close()
    assert session.session_id is None
    assert fake.sent[-1].method == "DELETE"
    assert fake.sent[-1].headers["Authorization"] == token
    assert fake.sessions == {}
    assert session.post("/api/echo", json={}).status_code == 200
    assert fake.count("POST", "/hybrid/session") == 2


def test_unknown_key_refetches_the_keys_and_retries_once(
    open_session: Callable, fake: FakeServer
) -> None:
    stale = KeyRing([SESSION_KEY, IDENTITY_1]).jwks()  # a current key the server no longer has
    fake.jwks_documents = [stale]
    session = open_session(format="jwe")
    assert session.post("/api/echo", json={}).status_code == 200
    assert fake.count("GET", "/hybrid/jwks.json") == 2
    assert fake.count("POST", "/api/echo") == 2


def test_unknown_key_twice_raises(open_session: Callable, fake: FakeServer) -> None:
    stale = KeyRing([SESSION_KEY, IDENTITY_1]).jwks()
    fake.jwks_documents = [stale, stale]
    with pytest.raises(UnknownKeyError) as caught:
        open_session(format="envelope").post("/api/echo", json={})
    assert caught.value.status == 401


@pytest.mark.parametrize("format", ["jwe", "session", "envelope"])
def test_wrong_pinned_kid_is_an_unknown_key_before_anything_is_sent(
    open_session: Callable, fake: FakeServer, format: str
) -> None:
    session = open_session(format=format, pinned_kid=KEYS["session"]["kid"])
    with pytest.raises(UnknownKeyError) as caught:
        session.post("/api/echo", json={})
    assert caught.value.status == 200  # the key set's response
    assert [r.path_url for r in fake.sent] == ["/hybrid/jwks.json"]


def test_pinned_non_current_kid_is_used_for_encryption(
    open_session: Callable, fake: FakeServer
) -> None:
    session = open_session(format="jwe", pinned_kid=KID_2)
    assert session.post("/api/echo", json={}).status_code == 200
    assert json.loads(b64url_decode(fake.sent[-1].body.decode().split(".")[0]))["kid"] == KID_2


def test_pinned_kid_refuses_a_signature_by_another_key(open_session: Callable) -> None:
    session = open_session(format="session", pinned_kid=KID_2)  # the handshake is signed by 1
    with pytest.raises(SignatureError):
        session.post("/api/echo", json={})


def test_unsigned_handshake_is_refused(open_session: Callable, fake: FakeServer) -> None:
    fake.sign_when = lambda request: request.path_url != "/hybrid/session"
    with pytest.raises(SignatureError):
        open_session(format="session").post("/api/echo", json={})
    assert fake.count("POST", "/api/echo") == 0
    assert open_session(format="session", verify_signatures=False).post(
        "/api/echo", json={}
    ).json() == {"received": {}}


def test_handshake_signed_for_another_handshake_is_refused(
    open_session: Callable, fake: FakeServer
) -> None:
    """A genuine handshake answer replayed to another handshake does not verify."""
    captured: list[requests.PreparedRequest] = []

    def replay(request: requests.PreparedRequest) -> tuple | None:
        if request.path_url != "/hybrid/session" or request.method != "POST":
            return None
        captured.append(request)
        fake.override = None
        status, headers, body = fake.route(request)
        fake.override = replay
        return status, {**headers, **bound_signature(captured[0], status, body)}, body

    fake.override = replay
    open_session(format="session").post("/api/echo", json={})  # the first one is its own
    with pytest.raises(SignatureError):
        open_session(format="session").post("/api/echo", json={})


REFUSALS = [
    (InvalidPayloadError, "invalid_payload", 400),
    (InvalidSessionError, "invalid_session", 401),
    (UnknownKeyError, "unknown_key", 401),
    (ReplayedRequestError, "replayed_request", 409),
    (PayloadTooLargeError, "payload_too_large", 413),
    (EncryptionRequiredError, "encryption_required", 415),
    (RateLimitedError, "rate_limited", 429),
    (StoreUnavailableError, "store_unavailable", 503),
]


@pytest.mark.parametrize(("cls", "code", "status"), REFUSALS, ids=[r[1] for r in REFUSALS])
def test_refusals_raise_their_exception(
    open_session: Callable, fake: FakeServer, cls: type, code: str, status: int
) -> None:
    def answer(request: requests.PreparedRequest) -> tuple | None:
        if request.path_url != "/api/echo":
            return None
        status_, headers, body = refusal(code)
        return status_, {**headers, "Retry-After": "12"}, body

    fake.override = answer
    with pytest.raises(cls) as caught:
        open_session(format="envelope").post("/api/echo", json={})
    error = caught.value
    assert isinstance(error, HybridClientError)
    assert isinstance(error, requests.RequestException)
    assert (error.code, error.status) == (code, status)
    assert error.response is not None
    assert error.response.status_code == status
    if cls is RateLimitedError:
        assert error.retry_after == 12.0


def forge(kind: str) -> Callable[[requests.PreparedRequest], tuple | None]:
    """An ``invalid_payload`` refusal to ``/api/echo`` whose RFC 9421 signature is wrong."""

    def answer(request: requests.PreparedRequest) -> tuple | None:
        if request.path_url != "/api/echo":
            return None
        status, headers, body = refusal("invalid_payload")  # with a valid X-Response-Signature
        other_request = request.copy()
        other_request.headers["Content-Digest"] = ContentDigest.create(b"another request")
        signature = {
            "unsigned": {},
            "other-key": bound_signature(request, status, body, key=IDENTITY_2, kid=KID_1),
            "unknown-kid": bound_signature(
                request, status, body, key=SESSION_KEY, kid=KEYS["session"]["kid"]
            ),
            "other-request": bound_signature(other_request, status, body),
            "other-status": bound_signature(request, 401, body),
            "other-body": bound_signature(request, status, error_body(ERRORS["unknown_key"])),
            "not-bound": bound_signature(request, status, body, covered=COVERED[:2]),
            "no-method": bound_signature(request, status, body, covered=COVERED[:2] + COVERED[3:]),
            "other-tag": bound_signature(request, status, body, tag="other"),
            "other-label": bound_signature(request, status, body, label="sig1"),
            "no-alg": bound_signature(request, status, body, include_alg=False),
            "garbled": {
                **bound_signature(request, status, body),
                "Signature-Input": "hybrid=garbage",
            },
        }[kind]
        return status, {**headers, **signature}, body

    return answer


FORGERIES = [
    "unsigned",
    "other-key",
    "unknown-kid",
    "other-request",
    "other-status",
    "other-body",
    "not-bound",
    "no-method",
    "other-tag",
    "other-label",
    "no-alg",
    "garbled",
]


@pytest.mark.parametrize("kind", FORGERIES)
def test_forged_refusal_signature_is_a_signature_error(
    open_session: Callable, fake: FakeServer, kind: str
) -> None:
    fake.override = forge(kind)
    fake.sign_when = lambda request: request.path_url != "/api/echo"
    with pytest.raises(SignatureError) as caught:
        open_session(format="jwe").post("/api/echo", json={})
    assert caught.value.code == "invalid_signature"
    assert caught.value.status == 400
    assert fake.count("POST", "/api/echo") == 1
    assert fake.count("GET", "/hybrid/jwks.json") == (2 if kind == "unknown-kid" else 1)


def test_forged_signature_passes_when_verification_is_off(
    open_session: Callable, fake: FakeServer
) -> None:
    fake.override = forge("other-key")
    fake.sign_when = lambda request: request.path_url != "/api/echo"
    with pytest.raises(InvalidPayloadError) as caught:
        open_session(format="jwe", verify_signatures=False).post("/api/echo", json={})
    assert caught.value.verified is False


@pytest.mark.parametrize(
    ("format", "code"),
    [("jwe", "unknown_key"), ("envelope", "unknown_key"), ("session", "invalid_session")],
)
def test_unsigned_retryable_refusal_is_a_signature_error_and_not_retried(
    open_session: Callable, fake: FakeServer, format: str, code: str
) -> None:
    fake.override = lambda r: refusal(code) if r.path_url == "/api/echo" else None
    fake.sign_when = lambda request: request.path_url != "/api/echo"
    with pytest.raises(SignatureError):
        open_session(format=format).post("/api/echo", json={})
    assert fake.count("POST", "/api/echo") == 1
    assert fake.count("GET", "/hybrid/jwks.json") <= 1
    assert fake.count("POST", "/hybrid/session") == (1 if format == "session" else 0)


@pytest.mark.parametrize(
    ("format", "code"),
    [("jwe", "unknown_key"), ("envelope", "unknown_key"), ("session", "invalid_session")],
)
def test_refusal_signed_for_another_request_is_not_retried(
    open_session: Callable, fake: FakeServer, format: str, code: str
) -> None:
    """A genuine signed refusal captured from one request, replayed to the next."""
    session = open_session(format=format)
    session.post("/api/missing", json={})
    earlier = fake.sent[-1]

    def replay(request: requests.PreparedRequest) -> tuple | None:
        if request.path_url != "/api/echo":
            return None
        status, headers, body = refusal(code)
        return status, {**headers, **bound_signature(earlier, status, body)}, body

    fake.override = replay
    with pytest.raises(SignatureError):
        session.post("/api/echo", json={})
    assert fake.count("POST", "/api/echo") == 1


@pytest.mark.parametrize("format", ["jwe", "session"])
def test_refusals_are_never_retried_when_verification_is_off(
    open_session: Callable, fake: FakeServer, format: str
) -> None:
    session = open_session(format=format, verify_signatures=False)
    session.post("/api/echo", json={})
    if format == "jwe":
        fake.ring = KeyRing([IDENTITY_2])  # the server rotated: the client's kid is unknown
        expected: type = UnknownKeyError
    else:
        fake.sessions.clear()
        expected = InvalidSessionError
    with pytest.raises(expected) as caught:
        session.post("/api/echo", json={})
    assert caught.value.verified is False
    assert fake.count("POST", "/api/echo") == 2


def test_refusal_without_the_legacy_signature_is_still_retried(
    open_session: Callable, fake: FakeServer
) -> None:
    """X-Response-Signature plays no part: a bound RFC 9421 signature is what counts."""
    answers = [(401, {"Content-Type": "application/json"}, error_body(UnknownKey))]
    fake.override = lambda r: answers.pop() if r.path_url == "/api/echo" and answers else None
    assert open_session(format="jwe").post("/api/echo", json={}).status_code == 200
    assert fake.count("POST", "/api/echo") == 2
    assert fake.count("GET", "/hybrid/jwks.json") == 2


@pytest.mark.parametrize(
    "marker", ["none", "uncovered", "other-code"], ids=["unmarked", "uncovered", "other-code"]
)
@pytest.mark.parametrize(
    ("format", "code"),
    [("jwe", "unknown_key"), ("envelope", "unknown_key"), ("session", "invalid_session")],
)
def test_refusal_not_marked_as_flask_hybrids_is_raised_but_not_acted_on(
    open_session: Callable, fake: FakeServer, format: str, code: str, marker: str
) -> None:
    """Signed and bound, but without a covered X-Hybrid-Refusal naming its code: no retry."""

    def answer(request: requests.PreparedRequest) -> tuple | None:
        if request.path_url != "/api/echo":
            return None
        status, headers, body = refusal(code)
        if marker == "none":
            return status, {**headers, **bound_signature(request, status, body)}, body
        if marker == "uncovered":  # added after signing, as a proxy could
            signed = bound_signature(request, status, body)
            return status, {**headers, **signed, "X-Hybrid-Refusal": code}, body
        other = "invalid_payload"
        return status, {**headers, **bound_signature(request, status, body, refusal=other)}, body

    fake.override = answer
    session = open_session(format=format)
    with pytest.raises(HybridClientError) as caught:
        session.post("/api/echo", json={})
    assert (caught.value.code, caught.value.verified) == (code, False)
    assert fake.count("POST", "/api/echo") == 1
    assert fake.count("GET", "/hybrid/jwks.json") == 1
    assert fake.count("POST", "/hybrid/session") == (format == "session")


def test_plaintext_envelope_answer_that_looks_like_a_refusal_is_the_apps(
    open_session: Callable, fake: FakeServer
) -> None:
    """An app's E plaintext 401 {"error": "unknown_key"} is returned, not retried."""
    fake.override = lambda r: refusal("unknown_key") if r.path_url == "/api/echo" else None
    fake.mark_refusals = False  # the app's answer: the server never marks it
    response = open_session(format="envelope", encrypt_response=False).post("/api/echo", json={})
    assert response.status_code == 401
    assert response.json()["error"] == "unknown_key"
    assert fake.count("POST", "/api/echo") == 1
    fake.mark_refusals = True  # the same answer marked as the server's refusal: acted on
    with pytest.raises(UnknownKeyError) as caught:
        open_session(format="envelope", encrypt_response=False).post("/api/echo", json={})
    assert caught.value.verified is True
    assert fake.count("POST", "/api/echo") == 3  # refused, retried once after a new key set


BODILESS = [(204, b""), (205, b""), (304, b""), (200, b"")]


@pytest.mark.parametrize(("status", "body"), BODILESS, ids=[str(s) for s, _ in BODILESS])
@pytest.mark.parametrize("options", ALL_FORMATS[:6])
def test_bodiless_answer_to_a_sealed_request_needs_a_bound_signature(
    open_session: Callable, fake: FakeServer, options: dict[str, Any], status: int, body: bytes
) -> None:
    session = open_session(**options)
    fake.override = lambda r: (status, {}, body) if r.path_url == "/api/echo" else None
    fake.sign_when = lambda request: request.path_url != "/api/echo"
    with pytest.raises(SignatureError):
        session.post("/api/echo", json={})
    fake.sign_when = lambda request: True
    response = session.post("/api/echo", json={})
    assert (response.status_code, response.content) == (status, b"")
    assert fake.count("POST", "/api/echo") == 2


@pytest.mark.parametrize("format", ["jwe", "session"])
def test_bodiless_answer_to_a_header_form_request_is_bound_to_its_key_header(
    open_session: Callable, fake: FakeServer, format: str
) -> None:
    header = "X-Hybrid-JWE" if format == "jwe" else "X-Encrypted-Aes-Key"
    session = open_session(format=format, reuse_key=True)
    session.get("/api/echo")
    earlier = fake.sent[-1]

    def answer(request: requests.PreparedRequest) -> tuple | None:
        if request.path_url != "/api/echo":
            return None
        # Everything the same but the key header: the earlier request's signature.
        assert request.headers["Content-Digest"] == earlier.headers["Content-Digest"]
        assert request.headers[header] != earlier.headers[header]
        return 204, bound_signature(earlier, 204, b""), b""

    fake.override = answer
    with pytest.raises(SignatureError):
        session.get("/api/echo")
    fake.override = lambda r: (
        (204, bound_signature(r, 204, b"", covered=COVERED), b"")
        if r.path_url == "/api/echo"
        else None
    )
    with pytest.raises(SignatureError):  # a signature that leaves the key header out
        session.get("/api/echo")


def test_bodiless_session_requests_wrap_a_fresh_key_even_when_reusing(
    open_session: Callable, fake: FakeServer
) -> None:
    session = open_session(format="session", reuse_key=True)
    session.get("/api/echo")
    session.get("/api/echo")
    session.post("/api/echo", json={})
    session.post("/api/echo", json={})
    headers = [
        r.headers["X-Encrypted-Aes-Key"]
        for r in fake.sent
        if r.path_url == "/api/echo" and r.method == "GET"
    ]
    bodies = [json.loads(r.body) for r in fake.sent if r.path_url == "/api/echo" and r.body]
    assert headers[0] != headers[1]
    assert bodies[0]["encryptedAesKey"] == bodies[1]["encryptedAesKey"]  # still reused
    assert headers[0] != bodies[0]["encryptedAesKey"]


@pytest.mark.parametrize("options", ALL_FORMATS)
def test_every_request_carries_the_content_digest_of_its_body(
    open_session: Callable, fake: FakeServer, options: dict[str, Any]
) -> None:
    session = open_session(**options)
    session.post("/api/echo", json={"a": 1})
    session.get("/api/echo")
    session.close()
    for request in fake.sent:
        if request.path_url == "/hybrid/jwks.json":
            continue
        body = request.body or b""
        assert request.headers["Content-Digest"] == ContentDigest.create(body), request.path_url
    sent = {(r.method, r.path_url) for r in fake.sent}
    assert ("POST", "/api/echo") in sent and ("GET", "/api/echo") in sent
    if options["format"] == "session":
        assert {("POST", "/hybrid/session"), ("DELETE", "/hybrid/session")} <= sent


def test_callers_content_digest_is_replaced(open_session: Callable, fake: FakeServer) -> None:
    session = open_session(format="jwe")
    session.post("/api/echo", json={}, headers={"Content-Digest": "sha-256=:AAAA:"})
    sent = fake.sent[-1]
    assert sent.headers["Content-Digest"] == ContentDigest.create(sent.body)


def test_plain_envelope_answer_must_be_signed(open_session: Callable, fake: FakeServer) -> None:
    fake.sign_when = lambda request: request.path_url != "/api/echo"
    with pytest.raises(SignatureError):
        open_session(format="envelope", encrypt_response=False).post("/api/echo", json={})
    assert fake.count("POST", "/api/echo") == 1


@pytest.mark.parametrize("created_offset", [-10 * 365 * 86400, 86400])
def test_created_is_not_compared_with_the_clock(
    open_session: Callable, fake: FakeServer, created_offset: int
) -> None:
    """Freshness comes from the binding to this request; a skewed clock still verifies."""
    created = int(time.time()) + created_offset
    fake.override = lambda r: (
        (204, bound_signature(r, 204, b"", created=created), b"")
        if r.path_url == "/api/echo"
        else None
    )
    assert open_session(format="jwe").post("/api/echo", json={}).status_code == 204


def separate_signing_jwks() -> dict[str, Any]:
    """Identity keys marked for encryption and the session key (here) as the signing key."""
    document = KeyRing([IDENTITY_1, IDENTITY_2]).jwks()
    for entry in document["keys"]:
        entry["use"] = "enc"
    signing = KeyRing([SESSION_KEY]).jwks()["keys"][0]
    document["keys"].append({**signing, "use": "sig", "alg": "RS256"})
    return document


@pytest.mark.parametrize("format", ["jwe", "session", "envelope"])
def test_separate_signing_key(open_session: Callable, fake: FakeServer, format: str) -> None:
    session_kid = KEYS["session"]["kid"]
    fake.jwks_documents = [separate_signing_jwks() for _ in range(4)]
    fake.signing_key = (SESSION_KEY, session_kid)
    session = open_session(format=format, pinned_kid=KID_1, pinned_signing_kid=session_kid)
    answers = [refusal("unknown_key" if format != "session" else "invalid_session")]
    fake.override = lambda r: answers.pop() if r.path_url == "/api/echo" and answers else None
    assert session.post("/api/echo", json={}).status_code == 200  # a verified refusal: retried
    assert fake.count("POST", "/api/echo") == 2
    # The signing key is no encryption key...
    with pytest.raises(UnknownKeyError):
        open_session(format=format, pinned_kid=session_kid).post("/api/echo", json={})
    # ...and by default the signing pin is the identity pin, which signs nothing here.
    with pytest.raises(UnknownKeyError):
        open_session(format=format, pinned_kid=KID_1).post("/api/echo", json={})


def test_signature_by_an_identity_key_is_refused_when_signing_keys_are_separate(
    open_session: Callable, fake: FakeServer
) -> None:
    fake.jwks_documents = [separate_signing_jwks() for _ in range(2)]
    with pytest.raises(SignatureError):  # signed by identity_1, which is "use": "enc"
        open_session(format="session").post("/api/echo", json={})


def test_key_sets_by_use() -> None:
    identity, signing = KeyRing([IDENTITY_1, IDENTITY_2]).jwks(), separate_signing_jwks()
    encryption_keys, signing_keys = client_module._key_sets(json.dumps(identity).encode())
    assert list(encryption_keys) == list(signing_keys) == [KID_1, KID_2]
    encryption_keys, signing_keys = client_module._key_sets(json.dumps(signing).encode())
    assert list(encryption_keys) == [KID_1, KID_2]
    assert list(signing_keys) == [KEYS["session"]["kid"]]
    both = {"keys": [{**identity["keys"][0], "use": "enc"}, {**identity["keys"][0], "use": "sig"}]}
    encryption_keys, signing_keys = client_module._key_sets(json.dumps(both).encode())
    assert list(encryption_keys) == list(signing_keys) == [KID_1]
    with pytest.raises(HybridError):
        client_module._key_sets(b'{"keys": [{"kty": "EC"}]}')


@pytest.mark.parametrize("format", ["jwe", "session", "envelope"])
def test_unsealed_answer_to_a_sealed_request_is_a_response_error(
    open_session: Callable, fake: FakeServer, format: str
) -> None:
    fake.override = lambda r: (
        (200, {"Content-Type": "application/json"}, b'{"received":{}}')
        if r.path_url == "/api/echo"
        else None
    )
    with pytest.raises(ResponseError):
        open_session(format=format).post("/api/echo", json={})


def test_bodies_and_content_types(open_session: Callable, fake: FakeServer) -> None:
    session = open_session(format="jwe")
    session.post("/api/echo", data='{"a": 1}')
    header = json.loads(b64url_decode(fake.sent[-1].body.decode().split(".")[0]))
    assert header["cty"] == "json"
    with pytest.raises(ValueError, match="JSON"):
        session.post("/api/echo", data=b"not json")
    with pytest.raises(ValueError, match="JSON bodies only"):
        open_session(format="session").post(
            "/api/echo", data="x", headers={"Content-Type": "text/plain"}
        )
    with pytest.raises(TypeError):
        session.post("/api/echo", data={"form": "field"})
    with pytest.raises(ValueError, match="multipart"):
        session.post("/api/echo", files={"f": b"x"})
    with pytest.raises(ValueError, match="origin"):
        session.post("http://elsewhere.test/api/echo", json={})


def test_jwe_text_body_carries_its_content_type(open_session: Callable, fake: FakeServer) -> None:
    session = open_session(format="jwe")
    response = session.post("/api/missing", data="hello", headers={"Content-Type": "text/plain"})
    assert response.status_code == 404
    header = json.loads(b64url_decode(fake.sent[-1].body.decode().split(".")[0]))
    assert header["cty"] == "text/plain"


def test_repr_and_state_hold_no_secrets(open_session: Callable, fake: FakeServer) -> None:
    session = open_session(format="session", reuse_key=True)
    session.post("/api/echo", json={})
    token = fake.sent[-1].headers["Authorization"].partition(" ")[2]
    cek = session._reused_key.cek  # type: ignore[union-attr]
    for text in (repr(session), repr(session._session), repr(session._reused_key)):
        assert token not in text
        assert cek.hex() not in text
        assert b64encode(cek) not in text


def test_response_hooks_see_the_decrypted_response(open_session: Callable) -> None:
    seen: list[bytes] = []
    session = open_session(format="jwe")
    session.hooks["response"].append(lambda r, **kwargs: seen.append(r.content))
    session.post("/api/echo", json={"x": 1})
    assert seen[-1] == b'{"received":{"x":1}}'


# --- against the real server (the demo app behind a real HTTP server) -------------------------
class Interceptor(HTTPAdapter):
    """A transport adapter that records requests and may alter them or their answers."""

    def __init__(
        self,
        *,
        on_request: Callable[[requests.PreparedRequest], None] | None = None,
        on_response: Callable[[requests.Response], None] | None = None,
    ) -> None:
        super().__init__()
        self.on_request, self.on_response = on_request, on_response
        self.sent: list[tuple[str, str]] = []
        self.last_headers: CaseInsensitiveDict[str] = CaseInsensitiveDict()

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        self.sent.append((str(request.method), request.path_url))
        self.last_headers = CaseInsensitiveDict(request.headers)
        if self.on_request is not None and request.path_url.startswith("/api/"):
            self.on_request(request)
        response = super().send(request, *args, **kwargs)
        if self.on_response is not None and request.path_url.startswith("/api/"):
            self.on_response(response)
        return response

    def count(self, method: str, path: str) -> int:
        return self.sent.count((method, path))


def flip_ciphertext_bit(request: requests.PreparedRequest) -> None:
    """Flip one bit of the request's ciphertext (S, E or J), keeping the encoding valid."""
    body = request.body
    assert isinstance(body, bytes)
    if body.startswith(b"{"):
        envelope = json.loads(body)
        name = "encryptedData" if "encryptedData" in envelope else "ct"
        raw = bytearray(b64decode(envelope[name]))
        raw[0] ^= 1
        envelope[name] = b64encode(bytes(raw))
        request.body = json.dumps(envelope, separators=(",", ":")).encode()
    else:
        segments = body.decode().split(".")
        raw = bytearray(b64url_decode(segments[3]))
        raw[0] ^= 1
        segments[3] = b64url_encode(bytes(raw))
        request.body = ".".join(segments).encode()
    assert len(request.body) == len(body)


@pytest.fixture
def live_session(live_server: Any) -> Iterator[Callable[..., tuple[HybridSession, Interceptor]]]:
    """HybridSessions on the live server, each with an Interceptor, closed after the test."""
    opened: list[HybridSession] = []

    def factory(
        interceptor: Interceptor | None = None, **options: Any
    ) -> tuple[HybridSession, Interceptor]:
        session = HybridSession(live_server.url, **options)
        interceptor = interceptor or Interceptor()
        session.mount("http://", interceptor)
        opened.append(session)
        return session, interceptor

    yield factory
    for session in opened:
        session.close()


@pytest.mark.parametrize("options", ALL_FORMATS)
def test_live_round_trip(live_session: Callable, options: dict[str, Any]) -> None:
    session, _ = live_session(**options)
    for count in range(3):
        payload = {"count": count, "name": "Zoë Ångström", "nested": [1, {"b": None}]}
        response = session.post("/api/echo", json=payload)
        assert response.status_code == 200
        assert response.json() == {"received": payload}
        assert response.headers["Content-Type"] == "application/json"
        assert int(response.headers["Content-Length"]) == len(response.content)


@pytest.mark.parametrize("format", ["jwe", "session"])
def test_live_bodiless_get_is_sealed_and_returned(live_session: Callable, format: str) -> None:
    session, interceptor = live_session(format=format)
    response = session.get("/api/echo")
    assert response.status_code == 405
    assert response.headers["Content-Type"].startswith("text/html")
    assert "Method Not Allowed" in response.text
    header = "X-Hybrid-JWE" if format == "jwe" else "X-Encrypted-Aes-Key"
    assert header in interceptor.last_headers


def test_live_envelope_bodiless_get_is_plain(live_session: Callable) -> None:
    session, _ = live_session(format="envelope")
    assert session.get("/api/echo").status_code == 405


@pytest.mark.parametrize("target", ["/api/echo?x=1&y=%C3%A9", "/api/echo?q=caf\u00e9 au lait"])
def test_live_jwe_query_string(live_session: Callable, target: str) -> None:
    session, _ = live_session(format="jwe")
    assert session.post(target, json={"q": 1}).json() == {"received": {"q": 1}}
    assert session.post("/api/echo", params={"a": "b c/é"}, json=[]).json() == {"received": []}


def test_live_jwe_non_json_body_reaches_the_app(live_session: Callable) -> None:
    session, _ = live_session(format="jwe")
    response = session.post("/api/echo", data="hello", headers={"Content-Type": "text/plain"})
    assert response.status_code == 415  # Flask's own answer, sealed: not a refusal


@pytest.mark.parametrize("format", ["jwe", "session", "envelope"])
def test_live_close_then_request(live_session: Callable, format: str) -> None:
    session, interceptor = live_session(format=format)
    assert session.post("/api/echo", json={}).status_code == 200
    first = session.session_id
    session.close()
    assert session.session_id is None
    assert session.post("/api/echo", json={"after": "close"}).json() == {
        "received": {"after": "close"}
    }
    if format == "session":
        assert interceptor.count("DELETE", "/hybrid/session") == 1
        assert interceptor.count("POST", "/hybrid/session") == 2
        assert session.session_id not in (None, first)


def test_live_session_deleted_server_side_is_reestablished_once(
    live_session: Callable, live_server: Any
) -> None:
    session, interceptor = live_session(format="session", reuse_key=True)
    session.post("/api/echo", json={})
    first = session.session_id
    ending = {name: interceptor.last_headers[name] for name in ("Authorization", "X-Device-Id")}
    ended = requests.delete(f"{live_server.url}/hybrid/session", headers=ending, timeout=10)
    assert ended.status_code == 204
    assert session.post("/api/echo", json={"n": 2}).json() == {"received": {"n": 2}}
    assert session.session_id not in (None, first)
    assert interceptor.count("POST", "/hybrid/session") == 2
    assert interceptor.count("POST", "/api/echo") == 3


@pytest.mark.parametrize("format", ["jwe", "session", "envelope"])
def test_live_wrong_pinned_kid_is_unknown_key(live_session: Callable, format: str) -> None:
    session, interceptor = live_session(format=format, pinned_kid="A" * 43)
    with pytest.raises(UnknownKeyError):
        session.post("/api/echo", json={})
    assert interceptor.sent == [("GET", "/hybrid/jwks.json")]


@pytest.mark.parametrize("format", ["jwe", "envelope", "session"])
def test_live_pinned_kids(live_session: Callable, live_server: Any, format: str) -> None:
    kids = [
        key["kid"]
        for key in requests.get(f"{live_server.url}/hybrid/jwks.json", timeout=10).json()["keys"]
    ]
    session, _ = live_session(format=format, pinned_kid=kids[0])
    assert session.post("/api/echo", json={}).status_code == 200
    session, _ = live_session(format=format, pinned_kid=kids[1])
    if format == "session":  # the handshake is signed by the current key, not the pinned one
        with pytest.raises(SignatureError):
            session.post("/api/echo", json={})
    else:  # J and E encrypt to the pinned (older) key, which the server still holds
        assert session.post("/api/echo", json={}).status_code == 200


@pytest.mark.parametrize("options", ALL_FORMATS)
def test_live_tampered_request_is_invalid_payload(
    live_session: Callable, options: dict[str, Any]
) -> None:
    session, _ = live_session(Interceptor(on_request=flip_ciphertext_bit), **options)
    with pytest.raises(InvalidPayloadError) as caught:
        session.post("/api/echo", json={"a": 1})
    assert caught.value.status == 400
    assert caught.value.response.json()["error"] == "invalid_payload"


@pytest.mark.parametrize("format", ["jwe", "session", "envelope"])
def test_live_forged_refusal_signature(live_session: Callable, format: str) -> None:
    def forge_signature(response: requests.Response) -> None:
        response.headers["Signature"] = f"hybrid=:{b64encode(bytes(256))}:"

    interceptor = Interceptor(on_request=flip_ciphertext_bit, on_response=forge_signature)
    session, _ = live_session(interceptor, format=format)
    with pytest.raises(SignatureError):
        session.post("/api/echo", json={})


@pytest.mark.parametrize("format", ["jwe", "session", "envelope"])
def test_live_legacy_signature_plays_no_part(live_session: Callable, format: str) -> None:
    """The server still sends X-Response-Signature for JSEncrypt clients; ours ignore it."""

    def forge_legacy_signature(response: requests.Response) -> None:
        response.headers["X-Response-Signature"] = b64encode(bytes(256))

    interceptor = Interceptor(on_request=flip_ciphertext_bit, on_response=forge_legacy_signature)
    session, _ = live_session(interceptor, format=format)
    with pytest.raises(InvalidPayloadError) as caught:
        session.post("/api/echo", json={})
    assert caught.value.verified is True


def test_live_refusal_is_signed(live_session: Callable) -> None:
    session, _ = live_session(Interceptor(on_request=flip_ciphertext_bit), format="jwe")
    with pytest.raises(InvalidPayloadError) as caught:
        session.post("/api/echo", json={})
    headers = caught.value.response.headers
    assert caught.value.verified is True
    assert {"Signature-Input", "Signature", "Content-Digest"} <= set(headers)
    assert 'tag="flask-hybrid"' in headers["Signature-Input"]
    assert "X-Response-Signature" in headers  # kept for format E's JSEncrypt clients
