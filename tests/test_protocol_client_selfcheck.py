"""Self-check of tests/protocol_client.py against the known-answer vectors (no server needed).

Each building block of the independent client is held to tests/vectors. The full request
path is driven through fake transports that check what the client sent and answer with the
recorded responses.
"""

from __future__ import annotations

import base64
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding
from flask import Flask, redirect, request
from werkzeug.serving import make_server

from tests.protocol_client import (
    OAEP_SHA256,
    EnvelopeClient,
    JweClient,
    Keys,
    ProtocolError,
    ProtocolViolation,
    SessionClient,
    b64,
    b64_strict,
    b64url,
    fetch_keys,
    flask_transport,
    http_transport,
    jwk_thumbprint,
    open_e_sealed,
    open_request_jwe,
    open_response_jwe,
    open_s_sealed,
    verify_signature,
)

VECTORS = Path(__file__).resolve().parent / "vectors"


def load(name: str) -> Any:
    return json.loads((VECTORS / name).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def keyfile() -> dict:
    return load("keys.json")


def private(keyfile: dict, name: str):
    return serialization.load_pem_private_key(keyfile[name]["private_pem"].encode(), None)


@pytest.fixture(scope="module")
def keys(keyfile: dict) -> Keys:
    return Keys.from_pems([keyfile[name]["public_pem"] for name in keyfile["identity_key_order"]])


@pytest.fixture(scope="module")
def handshake_vector() -> dict:
    return next(v for v in load("format_s.json") if v["kind"] == "handshake")


def session_client(keys: Keys, handshake_vector: dict, transport=None, **kw) -> SessionClient:
    client = SessionClient(transport or FakeServer(), keys, **kw)
    client.adopt(json.loads(handshake_vector["response"]["plaintext"]))
    return client


def sign(keyfile: dict, body: bytes) -> dict[str, str]:
    key = private(keyfile, "identity_1")
    return {
        "X-Response-Signature": b64(key.sign(body, padding.PKCS1v15(), hashes.SHA256())),
        "X-Response-Signature-Kid": keyfile["identity_1"]["kid"],
    }


class FakeServer:
    """A transport that records each call and answers with ``reply(method, target, headers,
    body)`` (default: 500 with no body)."""

    def __init__(self, reply=None) -> None:
        self.calls: list[tuple[str, str, dict[str, str], bytes]] = []
        self.reply = reply or (lambda *a: (500, {}, b""))

    def __call__(self, method: str, target: str, headers: dict[str, str], body: bytes):
        self.calls.append((method, target, headers, body))
        return self.reply(method, target, headers, body)


# -- keys ------------------------------------------------------------------------------------
def test_kids_are_rfc7638_thumbprints(keyfile: dict, keys: Keys) -> None:
    assert keys.current_kid == keyfile["identity_1"]["kid"]
    assert list(keys.public_keys) == [keyfile["identity_1"]["kid"], keyfile["identity_2"]["kid"]]
    for name in ("identity_1", "identity_2", "session"):
        pub = private(keyfile, name).public_key()
        assert jwk_thumbprint(pub) == keyfile[name]["kid"]


def test_fetch_keys_and_signature(keyfile: dict) -> None:
    jwks = {
        "keys": [
            {**keyfile[name]["jwk"], "kid": keyfile[name]["kid"]}
            for name in ("identity_1", "identity_2")
        ]
    }
    public = {"kid": keyfile["identity_1"]["kid"], "publicKey": keyfile["identity_1"]["public_pem"]}
    docs = {"/hybrid/jwks.json": jwks, "/hybrid/public-key": public}
    server = FakeServer(
        lambda m, t, h, b: (200, {"Content-Type": "application/json"}, json.dumps(docs[t]).encode())
    )
    fetched = fetch_keys(server)
    assert fetched.current_kid == keyfile["identity_1"]["kid"]
    assert len(fetched.public_keys) == 2
    body = b'{"ok":true}'
    assert verify_signature(fetched, sign(keyfile, body), body)
    assert not verify_signature(fetched, sign(keyfile, body), body + b" ")
    assert not verify_signature(fetched, {}, body)
    assert verify_signature(fetched, sign(keyfile, b""), b"")

    jwks["keys"][0]["kid"] = keyfile["identity_2"]["kid"]
    with pytest.raises(ProtocolViolation):
        fetch_keys(server)


# -- format S --------------------------------------------------------------------------------
@pytest.mark.parametrize("index", range(5))
def test_s_envelope_known_answers(keyfile, keys, handshake_vector, index) -> None:
    vector = load("format_s.json")[index]
    assert vector["kind"] == "request"
    client = session_client(keys, handshake_vector)
    cek = bytes.fromhex(vector["cek_hex"])
    req = vector["request"]
    env = client.envelope(req["plaintext"].encode(), cek, bytes.fromhex(req["iv_hex"]))
    for name in ("encryptedData", "iv", "authTag"):
        assert env[name] == req["envelope"][name]
    unwrapped = private(keyfile, "session").decrypt(b64_strict(env["encryptedAesKey"]), OAEP_SHA256)
    assert unwrapped == cek
    plaintext, iv = open_s_sealed(vector["response"]["envelope"], cek)
    assert plaintext == vector["response"]["plaintext"].encode()
    assert iv == bytes.fromhex(vector["response"]["iv_hex"])


def test_s_handshake_vector_opens_and_adopts(keys, handshake_vector) -> None:
    cek = bytes.fromhex(handshake_vector["cek_hex"])
    assert b64(cek) == handshake_vector["request"]["body"]["aesKey"]
    plaintext, _ = open_s_sealed(handshake_vector["response"]["envelope"], cek)
    assert plaintext == handshake_vector["response"]["plaintext"].encode()
    client = session_client(keys, handshake_vector)
    assert client.session_id == "00184efb-258f-4912-bafa-4413d636b274"
    assert client.expires_in == 3600


def test_s_handshake_through_transport(keyfile, keys, handshake_vector) -> None:
    vector = handshake_vector
    body = json.dumps(vector["response"]["envelope"]).encode()
    headers = {"Content-Type": "application/json", **sign(keyfile, body)}

    def reply(method, target, req_headers, req_body):
        assert (method, target) == ("POST", "/hybrid/session")
        assert req_headers["Content-Type"] == "application/json"
        assert json.loads(req_body) == vector["request"]["body"]
        return 201, headers, body

    client = SessionClient(FakeServer(reply), keys, "device-7f3a9c")
    data = client.handshake(aes_key=bytes.fromhex(vector["cek_hex"]))
    assert data["sessionId"] == client.session_id
    assert client.token == "dummy.jwt-token.for-test-vectors-only"

    headers["X-Response-Signature"] = sign(keyfile, b"other")["X-Response-Signature"]
    with pytest.raises(ProtocolViolation, match="signature"):
        client.handshake(aes_key=bytes.fromhex(vector["cek_hex"]))


def test_s_request_body_and_header_forms(keyfile, keys, handshake_vector) -> None:
    vectors = load("format_s.json")
    body_vec, header_vec = vectors[0], vectors[5]
    session_key = private(keyfile, "session")

    def reply(method, target, headers, body):
        assert headers["Authorization"] == "Bearer dummy.jwt-token.for-test-vectors-only"
        assert headers["X-Device-Id"] == "test-device-1"
        assert headers["X-Encryption-Enabled"] == "true"
        vec = header_vec if method == "GET" else body_vec
        if method == "GET":
            assert target == header_vec["request"]["target"] and body == b""
            wrapped = b64_strict(headers["X-Encrypted-Aes-Key"])
        else:
            env = json.loads(body)
            wrapped = b64_strict(env["encryptedAesKey"])
            opened, _ = open_s_sealed(env, bytes.fromhex(vec["cek_hex"]))
            assert opened == vec["request"]["plaintext"].encode()
        assert session_key.decrypt(wrapped, OAEP_SHA256) == bytes.fromhex(vec["cek_hex"])
        resp_headers = {
            "Content-Type": "application/json",
            "X-Encryption-Enabled": "true",
            "X-Plaintext-Content-Type": "application/json",
        }
        return (
            vec["response"]["status"],
            resp_headers,
            json.dumps(vec["response"]["envelope"]).encode(),
        )

    client = session_client(keys, handshake_vector, FakeServer(reply))
    got = client.request(
        "POST",
        "/api/echo",
        plaintext=body_vec["request"]["plaintext"].encode(),
        cek=bytes.fromhex(body_vec["cek_hex"]),
    )
    assert got.sealed and got.status == 200 and got.signature_ok is None
    assert got.body == body_vec["response"]["plaintext"].encode()
    assert got.headers["content-type"] == "application/json"

    got = client.request(
        "GET", header_vec["request"]["target"], cek=bytes.fromhex(header_vec["cek_hex"])
    )
    assert got.sealed and got.json()["page"] == 2


def test_s_reuse_key_sends_the_same_wrapped_key(keys, handshake_vector) -> None:
    client = session_client(keys, handshake_vector, reuse_key=True)
    first, second = client.envelope(b"{}"), client.envelope(b"{}")
    assert first["encryptedAesKey"] == second["encryptedAesKey"]
    assert first["iv"] != second["iv"]


def test_refusal_raises_protocol_error(keyfile, keys, handshake_vector) -> None:
    body = b'{"error":"invalid_session","message":"The session is not valid."}'
    headers = {"Content-Type": "application/json", **sign(keyfile, body)}
    client = session_client(keys, handshake_vector, FakeServer(lambda *a: (401, headers, body)))
    with pytest.raises(ProtocolError) as info:
        client.request("POST", "/api/echo", {"a": 1})
    assert (info.value.status, info.value.code) == (401, "invalid_session")
    assert info.value.signature_ok is True and info.value.known_code

    plain = FakeServer(lambda *a: (200, {"Content-Type": "application/json"}, b'{"a":1}'))
    with pytest.raises(ProtocolViolation, match="neither sealed"):
        session_client(keys, handshake_vector, plain).request("POST", "/api/echo", {"a": 1})


# -- format E --------------------------------------------------------------------------------
@pytest.mark.parametrize("index", range(8))
def test_e_envelope_known_answers(keyfile, keys, index) -> None:
    vector = load("format_e.json")[index]
    kid = keyfile[vector["key"]]["kid"]
    client = EnvelopeClient(
        FakeServer(),
        keys,
        padding="pkcs1v15" if "PKCS1" in vector["ek_padding"] else "oaep",
        cek_form=vector["cek_form"],
        with_kid="kid" in vector["envelope"],
        kid=kid,
    )
    cek, iv = bytes.fromhex(vector["cek_hex"]), bytes.fromhex(vector["iv_hex"])
    env = client.envelope(vector["plaintext"].encode(), cek, iv)
    recorded = vector["envelope"]
    assert (env["alg"], env["iv"], env["ct"]) == (recorded["alg"], recorded["iv"], recorded["ct"])
    assert env.get("kid") == recorded.get("kid")
    pad = padding.PKCS1v15() if client.padding == "pkcs1v15" else OAEP_SHA256
    assert private(keyfile, vector["key"]).decrypt(b64_strict(env["ek"]), pad) == bytes.fromhex(
        vector["rsa_plaintext_hex"]
    )
    sealed = vector["sealed_response"]
    plaintext, resp_iv = open_e_sealed(sealed["envelope"], cek)
    assert plaintext == sealed["plaintext"].encode()
    assert resp_iv == bytes.fromhex(sealed["iv_hex"])


def test_e_request_plain_and_sealed(keyfile, keys) -> None:
    vector = load("format_e.json")[0]
    cek = bytes.fromhex(vector["cek_hex"])
    sealed_body = json.dumps(vector["sealed_response"]["envelope"]).encode()
    plain_body = vector["sealed_response"]["plaintext"].encode()

    def reply(method, target, headers, body):
        assert headers["X-Encryption-Enabled"] == "true"
        assert json.loads(body)["alg"] == "RSA+AES-GCM"
        if headers.get("X-Encrypt-Response") == "true":
            return (
                200,
                {
                    "Content-Type": "application/json",
                    "X-Plaintext-Content-Type": "application/json",
                },
                sealed_body,
            )
        return 200, {"Content-Type": "application/json", **sign(keyfile, plain_body)}, plain_body

    plain = EnvelopeClient(FakeServer(reply), keys).request("POST", "/api/echo", {"a": 1})
    assert not plain.sealed and plain.signature_ok is True and plain.body == plain_body
    sealed = EnvelopeClient(FakeServer(reply), keys, encrypt_response=True).request(
        "POST", "/api/echo", {"a": 1}, cek=cek
    )
    assert sealed.sealed and sealed.body == plain_body and sealed.raw_body == sealed_body


# -- format J --------------------------------------------------------------------------------
@pytest.mark.parametrize("index", range(7))
def test_j_response_vectors_open(index) -> None:
    vector = load("format_j.json")[index]
    response = vector["response"]
    header, plaintext, iv = open_response_jwe(response["jwe"], bytes.fromhex(vector["cek_hex"]))
    assert header == json.loads(response["protected_header"])
    assert plaintext == response["plaintext"].encode()
    assert iv == bytes.fromhex(response["iv_hex"])


def j_client(keyfile, keys, handshake_vector, vector, transport=None) -> JweClient:
    transport = transport or FakeServer()
    if vector["key"] == "session":
        return JweClient(transport, keys, session=session_client(keys, handshake_vector, transport))
    return JweClient(transport, keys, kid=keyfile[vector["key"]]["kid"])


@pytest.mark.parametrize("index", range(7))
def test_j_request_built_with_jwcrypto_decrypts(keyfile, keys, handshake_vector, index) -> None:
    vector = load("format_j.json")[index]
    req = vector["request"]
    header = json.loads(vector["protected_header"])
    cek = bytes.fromhex(vector["cek_hex"])
    plaintext = vector["plaintext"].encode() if req["carried_in"] == "body" else None
    client = j_client(keyfile, keys, handshake_vector, vector)
    compact, got_cek = client.build(
        req["method"],
        req["target"],
        plaintext,
        iat=req["now"],
        jti=header["jti"],
        cty=header.get("cty"),
        cek=cek,
    )
    assert got_cek == cek
    # the same protected header, byte for byte, as the one jose produced for the vector
    assert compact.split(".")[0] == b64url(vector["protected_header"].encode())
    opened_header, opened, opened_cek = open_request_jwe(compact, private(keyfile, vector["key"]))
    assert (opened_header, opened, opened_cek) == (header, plaintext or b"", cek)
    # and the recorded vector request itself opens the same way
    assert open_request_jwe(vector["jwe"], private(keyfile, vector["key"]))[1:] == (
        vector["plaintext"].encode(),
        cek,
    )


@pytest.mark.parametrize("index", [0, 3, 4, 6])
def test_j_request_through_transport(keyfile, keys, handshake_vector, index) -> None:
    vector = load("format_j.json")[index]
    req, response = vector["request"], vector["response"]
    header = json.loads(vector["protected_header"])
    cek = bytes.fromhex(vector["cek_hex"])
    reply_recorded = (
        response["status"],
        {"Content-Type": "application/jose"},
        response["jwe"].encode(),
    )

    def reply(method, target, headers, body):
        assert (method, target) == (req["method"], req["target"])
        if req["carried_in"] == "body":
            assert headers["Content-Type"] == "application/jose"
            jwe = body.decode()
        else:
            assert body == b"" and headers["X-Encryption-Enabled"] == "true"
            jwe = headers["X-Hybrid-JWE"]
        if vector["key"] == "session":
            assert headers["Authorization"].startswith("Bearer ") and headers["X-Device-Id"]
        got_header, _, got_cek = open_request_jwe(jwe, private(keyfile, vector["key"]))
        assert got_header == header and got_cek == cek
        return reply_recorded

    client = j_client(keyfile, keys, handshake_vector, vector, FakeServer(reply))
    got = client.request(
        req["method"],
        req["target"],
        plaintext=vector["plaintext"].encode() if req["carried_in"] == "body" else None,
        cty=header.get("cty"),
        iat=req["now"],
        jti=header["jti"],
        cek=cek,
    )
    assert got.sealed and got.status == response["status"]
    assert got.body == response["plaintext"].encode()
    assert got.headers["Content-Type"] == "application/json"
    assert got.jose_header["req"] == header["jti"]

    # a response to another jti is a contract breach
    client.transport = FakeServer(lambda *a: reply_recorded)
    with pytest.raises(ProtocolViolation, match="req"):
        client.request(req["method"], req["target"], plaintext=b"{}", cek=cek)
    # and so is one whose status member is not the HTTP status
    bad_status = (599, reply_recorded[1], reply_recorded[2])
    client.transport = FakeServer(lambda *a: bad_status)
    with pytest.raises(ProtocolViolation, match="status"):
        client.request(req["method"], req["target"], plaintext=b"{}", jti=header["jti"], cek=cek)


def test_j_handshake(keyfile, keys, handshake_vector) -> None:
    vector = load("format_j.json")[5]
    header = json.loads(vector["protected_header"])
    response = vector["response"]
    seen = {}

    def reply(method, target, headers, body):
        got_header, plaintext, _ = open_request_jwe(body.decode(), private(keyfile, "identity_1"))
        seen.update(header=got_header, plaintext=plaintext)
        return 201, {"Content-Type": "application/jose"}, response["jwe"].encode()

    client = JweClient(FakeServer(reply), keys)
    # the recorded response answers the recorded jti under the recorded CEK
    data = client.handshake(
        "device-7f3a9c",
        iat=vector["request"]["now"],
        jti=header["jti"],
        cek=bytes.fromhex(vector["cek_hex"]),
    )
    assert data == json.loads(response["plaintext"])
    assert seen["header"]["htu"] == "/hybrid/session" and seen["header"]["htm"] == "POST"
    assert json.loads(seen["plaintext"]) == {"deviceId": "device-7f3a9c"}
    adopted = SessionClient(FakeServer(), keys, "device-7f3a9c")
    adopted.adopt(data)
    assert adopted.session_id == keyfile["session"]["session_id"]


def test_j_reuse_key_sends_the_same_ek(keyfile, keys) -> None:
    client = JweClient(FakeServer(), keys, reuse_key=True)
    first, cek1 = client.build("POST", "/api/echo", b"{}")
    second, cek2 = client.build("POST", "/api/echo", b"{}")
    assert cek1 == cek2 and first.split(".")[1] == second.split(".")[1]
    assert first.split(".")[0] != second.split(".")[0]  # fresh jti
    for compact in (first, second):
        assert open_request_jwe(compact, private(keyfile, "identity_1"))[2] == cek1


def test_j_extra_header_edits_the_protected_header(keyfile, keys) -> None:
    client = JweClient(FakeServer(), keys)
    compact, _ = client.build("GET", "/x", None, extra_header={"jti": None, "typ": "JWE"}, cty=None)
    header = json.loads(base64.urlsafe_b64decode(compact.split(".")[0] + "=="))
    assert "jti" not in header and "cty" not in header and header["typ"] == "JWE"


# -- transports ------------------------------------------------------------------------------
def test_flask_transport_sends_the_target_exactly() -> None:
    app = Flask(__name__)

    @app.route("/<path:anything>", methods=["GET", "POST", "PUT"])
    def echo(anything):
        return {
            "method": request.method,
            "raw_uri": request.environ.get("RAW_URI"),
            "full_path": request.full_path,
            "remote": request.remote_addr,
            "ctype": request.headers.get("Content-Type"),
            "x": request.headers.get("X-Test"),
            "body": request.get_data(as_text=True),
        }

    send = flask_transport(app.test_client(), {"REMOTE_ADDR": "10.1.2.3"})
    status, headers, body = send(
        "PUT",
        "/api/orders/1042?x=1&y=%C3%A9",
        {"Content-Type": "application/jose", "X-Test": "1"},
        b"abc",
    )
    got = json.loads(body)
    assert status == 200 and headers["content-type"] == "application/json"
    assert got == {
        "method": "PUT",
        "raw_uri": "/api/orders/1042?x=1&y=%C3%A9",
        "full_path": "/api/orders/1042?x=1&y=%C3%A9",
        "remote": "10.1.2.3",
        "ctype": "application/jose",
        "x": "1",
        "body": "abc",
    }


def test_http_transport_sends_the_target_exactly_and_follows_no_redirect() -> None:
    app = Flask(__name__)

    @app.route("/echo", methods=["POST"])
    def echo():
        raw_uri = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
        body = request.get_data(as_text=True)
        return {"raw_uri": raw_uri, "body": body, "x": request.headers.get("X-Test")}

    @app.route("/moved")
    def moved():
        return redirect("/echo")

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with http_transport(f"http://127.0.0.1:{server.port}") as send:
            target = "/echo?a=%7E&b=%C3%A9&c=x%20y"
            status, headers, body = send("POST", target, {"X-Test": "1"}, b"payload")
            assert status == 200 and headers["content-type"] == "application/json"
            assert json.loads(body) == {"raw_uri": target, "body": "payload", "x": "1"}
            status, headers, _ = send("GET", "/moved", {}, b"")
            assert status == 302 and headers["Location"].endswith("/echo")
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
