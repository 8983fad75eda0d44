"""Known-answer vectors from tests/vectors: every valid one opens and seals to its bytes,
every invalid one is refused with its code -- in the core, and through the whole app."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask, Response, request

from flask_hybrid import ENVIRON_KEY, HybridEncryption
from flask_hybrid.core import formats, jwe, rsa
from flask_hybrid.core.encoding import b64decode
from flask_hybrid.core.keyring import KeyRing
from flask_hybrid.errors import ERRORS, HybridError, UnknownKey, error_body

from .conftest import base_config, hybrid_state, load_vectors

FORMAT_S = load_vectors("format_s")
FORMAT_E = load_vectors("format_e")
FORMAT_J = load_vectors("format_j")
INVALID = load_vectors("invalid")
KEYS = load_vectors("keys")
SESSION_ID = KEYS["session"]["session_id"]
DEVICE_ID = "vector-device"


def ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [vector.get("id") or vector["description"][:60] for vector in vectors]


@pytest.fixture(scope="module")
def keyring() -> KeyRing:
    return KeyRing.from_pems([KEYS[name]["private_pem"] for name in KEYS["identity_key_order"]])


@pytest.fixture(scope="module")
def session_key() -> rsa.PrivateKey:
    return rsa.load_private_key(KEYS["session"]["private_pem"])


def test_kids_and_jwks_match_the_vectors(keyring: KeyRing) -> None:
    assert [key.kid for key in keyring] == [KEYS["identity_1"]["kid"], KEYS["identity_2"]["kid"]]
    for key, name in zip(keyring, KEYS["identity_key_order"], strict=True):
        assert key.jwk == {"kty": "RSA", "kid": KEYS[name]["kid"], **KEYS[name]["jwk"]} | {
            "kty": "RSA"
        }
        assert key.public_pem.strip() == KEYS[name]["public_pem"].strip()


# --- core level --------------------------------------------------------------------------------
@pytest.mark.parametrize("vector", FORMAT_S, ids=ids(FORMAT_S))
def test_core_format_s(vector: dict[str, Any], session_key: rsa.PrivateKey) -> None:
    cek = bytes.fromhex(vector["cek_hex"])
    if vector["kind"] == "request":
        envelope = formats.parse_session_envelope(vector["request"]["envelope"])
        assert rsa.unwrap_oaep(session_key, envelope.wrapped_key) == cek
        opened = formats.open_session_envelope(envelope, cek)
        assert opened == vector["request"]["plaintext"].encode()
        resealed = formats.seal_session(cek, opened, iv=envelope.iv)
        assert json.loads(resealed) == {
            key: vector["request"]["envelope"][key] for key in ("encryptedData", "iv", "authTag")
        }
    elif vector["kind"] == "header_key":
        wrapped = formats.parse_wrapped_key_header(
            vector["request"]["headers"]["X-Encrypted-Aes-Key"]
        )
        assert rsa.unwrap_oaep(session_key, wrapped) == cek
    else:
        assert formats.parse_handshake(vector["request"]["body"])[0] == cek
    response = vector["response"]
    sealed = formats.seal_session(
        cek, response["plaintext"].encode(), iv=bytes.fromhex(response["iv_hex"])
    )
    assert sealed == json.dumps(response["envelope"], separators=(",", ":")).encode()
    assert formats.open_session_response(sealed, cek) == response["plaintext"].encode()


@pytest.mark.parametrize("vector", FORMAT_E, ids=ids(FORMAT_E))
def test_core_format_e(vector: dict[str, Any], keyring: KeyRing) -> None:
    envelope = formats.parse_envelope(vector["envelope"])
    cek, plaintext = formats.open_envelope(envelope, keyring)
    assert cek.hex() == vector["cek_hex"]
    assert plaintext == vector["plaintext"].encode()
    assert envelope.iv.hex() == vector["iv_hex"]
    response = vector["sealed_response"]
    sealed = formats.seal_envelope_response(
        cek, response["plaintext"].encode(), iv=bytes.fromhex(response["iv_hex"])
    )
    assert json.loads(sealed) == response["envelope"]
    assert formats.open_envelope_response(sealed, cek) == response["plaintext"].encode()


@pytest.mark.parametrize("vector", FORMAT_J, ids=ids(FORMAT_J))
def test_core_format_j(
    vector: dict[str, Any], keyring: KeyRing, session_key: rsa.PrivateKey
) -> None:
    token = jwe.parse_compact(vector["jwe"])
    assert b64decode_url(token.protected_segment) == vector["protected_header"].encode()
    binding = formats.read_request_binding(token.header)
    identity_key = keyring.get(binding.kid)
    private_key = identity_key.private_key if identity_key else session_key
    cek = jwe.unwrap_key(token, private_key)
    assert cek.hex() == vector["cek_hex"]
    request_info = vector["request"]
    plaintext = formats.open_request(
        token, cek, allow_empty=request_info["carried_in"] == "X-Hybrid-JWE"
    )
    assert plaintext == vector["plaintext"].encode()
    formats.check_request_binding(
        binding,
        method=request_info["method"],
        target=request_info["target"],
        now=request_info["now"],
        window=300,
    )
    response = vector["response"]
    header = json.loads(response["protected_header"])
    assert header["req"] == binding.jti
    sealed = formats.seal_response(
        cek,
        response["plaintext"].encode(),
        request_jti=header["req"],
        status=header["status"],
        content_type=header["cty"],
        iv=bytes.fromhex(response["iv_hex"]),
    )
    assert sealed == response["jwe"]
    opened_header, opened = formats.open_response(sealed, cek, request_jti=binding.jti)
    assert opened == response["plaintext"].encode() and opened_header == header


def b64decode_url(segment: str) -> bytes:
    from flask_hybrid.core.encoding import b64url_decode

    return b64url_decode(segment)


def _refusal_code(vector: dict[str, Any], keyring: KeyRing, session_key: rsa.PrivateKey) -> str:
    try:
        if vector["format"] == "S":
            envelope = formats.parse_session_envelope(vector["envelope"])
            formats.open_session_envelope(
                envelope, rsa.unwrap_oaep(session_key, envelope.wrapped_key)
            )
        elif vector["format"] == "E":
            formats.open_envelope(formats.parse_envelope(vector["envelope"]), keyring)
        else:
            token = jwe.parse_compact(vector["jwe"])
            binding = formats.read_request_binding(token.header)
            identity_key = keyring.get(binding.kid)
            if identity_key is None:
                raise UnknownKey
            cek = jwe.unwrap_key(token, identity_key.private_key)
            formats.open_request(token, cek, allow_empty=False)
    except HybridError as error:
        return error.error
    return "accepted"


@pytest.mark.parametrize("vector", INVALID, ids=ids(INVALID))
def test_core_refuses_invalid_vector(
    vector: dict[str, Any], keyring: KeyRing, session_key: rsa.PrivateKey
) -> None:
    assert _refusal_code(vector, keyring, session_key) == vector["expect"]


# --- through the whole app (middleware, blueprint, store) ---------------------------------------
def _recorded_answers() -> dict[tuple[str, str, str, bytes], tuple[int, bytes]]:
    """What the vector app answers: the recorded response for each recorded request."""
    answers: dict[tuple[str, str, str, bytes], tuple[int, bytes]] = {}
    for vector in FORMAT_S:
        if vector["kind"] == "handshake":
            continue
        req = vector["request"]
        body = req.get("plaintext", "").encode()
        key = ("S", req.get("method", "POST"), req.get("target", "/api/echo"), body)
        answers[key] = (vector["response"]["status"], vector["response"]["plaintext"].encode())
    for vector in FORMAT_E:
        key = ("E", "POST", "/api/echo", vector["plaintext"].encode())
        answers[key] = (200, vector["sealed_response"]["plaintext"].encode())
    for vector in FORMAT_J:
        req = vector["request"]
        if req["target"].startswith("/hybrid/"):
            continue
        key = ("J", req["method"], req["target"], vector["plaintext"].encode())
        answers[key] = (vector["response"]["status"], vector["response"]["plaintext"].encode())
    return answers


@pytest.fixture
def vector_app(vector_keys: dict[str, Any], tmp_path: Any) -> Flask:
    flask_app = Flask(__name__, instance_path=str(tmp_path))
    flask_app.config.update(base_config(vector_keys))
    HybridEncryption(flask_app)
    answers = _recorded_answers()

    @flask_app.route("/api/<path:rest>", methods=["GET", "POST", "PUT"])
    def recorded(rest: str) -> Response:
        target = request.path
        if request.query_string:
            target = f"{request.path}?{request.query_string.decode()}"
        encrypted_format = request.environ[ENVIRON_KEY].format
        status, body = answers[(encrypted_format, request.method, target, request.get_data())]
        return Response(body, status, content_type="application/json")

    return flask_app


def _start_vector_session(flask_app: Flask) -> str:
    handshake = hybrid_state(flask_app).sessions.create(
        DEVICE_ID,
        "127.0.0.1",
        private_key=rsa.load_private_key(KEYS["session"]["private_pem"]),
        session_id=SESSION_ID,
    )
    return handshake.token


def _session_headers(token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "X-Device-Id": DEVICE_ID,
        "X-Encryption-Enabled": "true",
    }


S_APP_VECTORS = [vector for vector in FORMAT_S if vector["kind"] != "handshake"]


@pytest.mark.parametrize("vector", S_APP_VECTORS, ids=ids(S_APP_VECTORS))
def test_app_opens_format_s_vector(vector: dict[str, Any], vector_app: Flask) -> None:
    headers = _session_headers(_start_vector_session(vector_app))
    req = vector["request"]
    client = vector_app.test_client()
    if vector["kind"] == "header_key":
        headers.update(req["headers"])
        response = client.open(req["target"], method=req["method"], headers=headers)
    else:
        response = client.post("/api/echo", json=req["envelope"], headers=headers)
    assert response.status_code == vector["response"]["status"]
    assert response.headers["X-Encryption-Enabled"] == "true"
    assert response.headers["X-Plaintext-Content-Type"] == "application/json"
    assert "X-Response-Signature" not in response.headers  # sealed: the AEAD authenticates it
    cek = bytes.fromhex(vector["cek_hex"])
    assert formats.open_session_response(response.data, cek) == (
        vector["response"]["plaintext"].encode()
    )


@pytest.mark.parametrize("vector", FORMAT_E, ids=ids(FORMAT_E))
@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "signed"])
def test_app_opens_format_e_vector(vector: dict[str, Any], sealed: bool, vector_app: Flask) -> None:
    headers = {"X-Encryption-Enabled": "true"}
    if sealed:
        headers["X-Encrypt-Response"] = "TRUE"
    response = vector_app.test_client().post("/api/echo", json=vector["envelope"], headers=headers)
    assert response.status_code == 200
    expected = vector["sealed_response"]["plaintext"].encode()
    identity = rsa.load_public_key(KEYS["identity_1"]["public_pem"])
    if sealed:
        cek = bytes.fromhex(vector["cek_hex"])
        assert formats.open_envelope_response(response.data, cek) == expected
        assert response.headers["X-Plaintext-Content-Type"] == "application/json"
        assert "X-Response-Signature" not in response.headers
    else:
        assert response.data == expected
        assert response.headers["X-Response-Signature-Kid"] == KEYS["identity_1"]["kid"]
        signature = b64decode(response.headers["X-Response-Signature"])
        assert rsa.verify(identity, signature, response.data)


@pytest.mark.parametrize("vector", FORMAT_J, ids=ids(FORMAT_J))
def test_app_opens_format_j_vector(vector: dict[str, Any], vector_app: Flask) -> None:
    req = vector["request"]
    hybrid_state(vector_app).clock = lambda: req["now"]
    headers: dict[str, str] = {}
    if vector["key"] == "session":
        headers.update(_session_headers(_start_vector_session(vector_app)))
        del headers["X-Encryption-Enabled"]
    client = vector_app.test_client()
    if req["carried_in"] == "X-Hybrid-JWE":
        headers["X-Hybrid-JWE"] = vector["jwe"]
        response = client.open(req["target"], method=req["method"], headers=headers)
    else:
        headers["Content-Type"] = "application/jose"
        response = client.open(
            req["target"], method=req["method"], data=vector["jwe"], headers=headers
        )
    expected = vector["response"]
    assert response.status_code == expected["status"]
    assert response.content_type == "application/jose"
    cek = bytes.fromhex(vector["cek_hex"])
    header, plaintext = formats.open_response(
        response.get_data(as_text=True),
        cek,
        request_jti=json.loads(vector["protected_header"])["jti"],
    )
    assert header["status"] == expected["status"]
    assert header["cty"] == "application/json"
    if req["target"] == "/hybrid/session":
        handshake = json.loads(plaintext)
        assert list(handshake) == ["token", "publicKey", "sessionId", "expiresIn"]
        assert response.headers["X-Response-Signature-Kid"] == KEYS["identity_1"]["kid"]
    else:
        assert plaintext == expected["plaintext"].encode()
    # The same JWE again is a replay.
    replay = client.open(
        req["target"],
        method=req["method"],
        data=None if req["carried_in"] == "X-Hybrid-JWE" else vector["jwe"],
        headers=headers,
    )
    assert replay.status_code == 409
    assert replay.get_json()["error"] == "replayed_request"


@pytest.mark.parametrize("vector", INVALID, ids=ids(INVALID))
def test_app_refuses_invalid_vector(vector: dict[str, Any], vector_app: Flask) -> None:
    client = vector_app.test_client()
    if vector["format"] == "S":
        headers = _session_headers(_start_vector_session(vector_app))
        response = client.post("/api/echo", json=vector["envelope"], headers=headers)
    elif vector["format"] == "E":
        response = client.post(
            "/api/echo", json=vector["envelope"], headers={"X-Encryption-Enabled": "true"}
        )
    else:
        req = vector["request"]
        hybrid_state(vector_app).clock = lambda: req["now"]
        response = client.open(
            req["target"],
            method=req["method"],
            data=vector["jwe"],
            headers={"Content-Type": "application/jose"},
        )
    error = ERRORS[vector["expect"]]
    assert response.status_code == error.code
    assert response.data == error_body(error)
    assert response.headers["X-Response-Signature-Kid"] == KEYS["identity_1"]["kid"]
