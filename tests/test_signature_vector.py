"""The worked examples of tests/vectors/signature.json (request-bound response signatures).

The first example is a refusal signed with the signing key (``rsa-v1_5-sha256``); the others
are the app's answers to requests the server opened, bound by an HMAC under the answer key of
the request's CEK (``hmac-sha256``, keyid ``cek``): a 204 to a bodiless S request, and a sealed
format S answer. Each example is checked three ways: http-message-signatures verifies it; the
server's signer (``flask_hybrid.core.signatures.sign_response``, and the middleware itself)
makes the very same headers from the same input; and the Python client's verifier accepts it,
and refuses it once any covered component, the body or the signature has one byte changed (or,
for the HMAC, under another CEK). The independent protocol client
(``tests/protocol_client.py``) agrees on the examples, and holds the real server to the section
with every required signature enforced.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask, Response
from http_message_signatures import (
    HTTPMessageVerifier,
    InvalidSignature,
    MappingKeyResolver,
    algorithms,
)

from flask_hybrid import HybridEncryption
from flask_hybrid.client import SentRequest, SignatureError, verify_response_signature
from flask_hybrid.core import formats, rsa, signatures
from flask_hybrid.core.encoding import b64decode
from flask_hybrid.errors import UnknownKey, error_body

from . import protocol_client as pc
from .conftest import base_config, hybrid_state, load_vectors

EXAMPLES = load_vectors("signature")
IDS = ["refusal", "bodiless", "sealed"]
REFUSAL, BODILESS, SEALED = EXAMPLES
HMAC_EXAMPLES = [BODILESS, SEALED]
HMAC_IDS = ["bodiless", "sealed"]
KEYS = load_vectors("keys")
FORMAT_S = load_vectors("format_s")
SIGNING_KEY = rsa.load_private_key(KEYS["identity_1"]["private_pem"])
SESSION_KEY = rsa.load_private_key(KEYS["session"]["private_pem"])
SIGNED_HEADERS = ("Content-Digest", "Signature-Input", "Signature")
MARKER = "X-Hybrid-Refusal"  # flask-hybrid's own refusals only, covered by the signature
DEVICE_ID = "signature-example-device"


def example_cek(example: dict[str, Any]) -> bytes | None:
    """The request's CEK of an HMAC example (None for one signed with the signing key)."""
    return bytes.fromhex(example["cek_hex"]) if "cek_hex" in example else None


def one_byte_flipped(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


def signed_headers(example: dict[str, Any]) -> dict[str, str]:
    """The headers the server's signature adds to the example's answer."""
    headers = example["response"]["headers"]
    return {name: headers[name] for name in (*SIGNED_HEADERS, MARKER) if name in headers}


class Message:
    """A response with the request it answers, as http-message-signatures reads them."""

    def __init__(self, status: int, headers: dict[str, str], request: SentRequest) -> None:
        self.status_code, self.headers, self.request = status, headers, request


def sent_request(example: dict[str, Any]) -> SentRequest:
    request = example["request"]
    url = f"http://127.0.0.1{request['target']}"  # not covered: any URL does
    return SentRequest(request["method"], list(dict(request["headers"]).items()), url)


def test_the_refusal_example_is_the_servers_unknown_key_refusal() -> None:
    assert REFUSAL["response"]["status"] == UnknownKey.code == 401
    assert REFUSAL["response"]["body"].encode() == error_body(UnknownKey)
    assert (REFUSAL["alg"], REFUSAL["key"]) == ("rsa-v1_5-sha256", "identity_1")
    assert REFUSAL["kid"] == KEYS["identity_1"]["kid"]
    assert REFUSAL["response"]["headers"][MARKER] == "unknown_key"
    assert REFUSAL["covered_components"][2] == '"x-hybrid-refusal"'
    for example in HMAC_EXAMPLES:
        assert MARKER not in example["response"]["headers"]
    assert BODILESS["response"]["body"] == ""
    assert '"x-encrypted-aes-key";req' in BODILESS["covered_components"]


@pytest.mark.parametrize("example", HMAC_EXAMPLES, ids=HMAC_IDS)
def test_the_hmac_examples_are_bound_by_the_answer_key_of_their_requests_cek(
    example: dict[str, Any],
) -> None:
    cek = example_cek(example)
    assert cek is not None
    assert (example["alg"], example["kid"]) == ("hmac-sha256", signatures.CEK_KEYID)
    assert "key" not in example  # no signing key: the CEK alone makes the binding
    assert signatures.answer_key(cek) == bytes.fromhex(example["answer_key_hex"])
    request = example["request"]
    if example is BODILESS:  # the CEK is the one the request's key header wraps
        wrapped_key = b64decode(request["headers"]["X-Encrypted-Aes-Key"])
    else:  # the request body is an S envelope wrapping the CEK; the answer opens under it
        envelope = formats.parse_session_envelope(json.loads(request["body"]))
        wrapped_key = envelope.wrapped_key
        recorded = FORMAT_S[0]
        assert formats.open_session_envelope(envelope, cek) == (
            recorded["request"]["plaintext"].encode()
        )
        answer = example["response"]["body"].encode()
        assert formats.open_session_response(answer, cek) == (
            recorded["response"]["plaintext"].encode()
        )
    assert rsa.unwrap_oaep(SESSION_KEY, wrapped_key) == cek


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_http_message_signatures_verifies_the_example(example: dict[str, Any]) -> None:
    response = example["response"]
    cek = example_cek(example)
    if cek is None:
        algorithm: Any = algorithms.RSA_V1_5_SHA256
        key: Any = SIGNING_KEY.public_key()
    else:
        algorithm, key = algorithms.HMAC_SHA256, signatures.answer_key(cek)
    verifier = HTTPMessageVerifier(
        signature_algorithm=algorithm,
        key_resolver=MappingKeyResolver(public_keys={example["kid"]: key}, private_keys={}),
    )
    sent = sent_request(example)  # the library reads a request's headers as a mapping
    request = SimpleNamespace(method=sent.method, url=sent.url, headers=dict(sent.headers))
    message = Message(response["status"], dict(response["headers"]), request)
    (result,) = verifier.verify(
        message,
        max_age=None,  # the example's created is fixed in the past
        expect_tag="flask-hybrid",
        expect_label="hybrid",
        require_components=example["covered_components"],
        body=response["body"].encode(),
    )
    assert result.parameters == {
        "created": example["created"],
        "keyid": example["kid"],
        "alg": example["alg"],
        "tag": "flask-hybrid",
    }
    base = "\n".join(f"{name}: {value}" for name, value in result.covered_components.items())
    assert base == example["signature_base"]
    assert result.body == response["body"].encode()
    message.headers["Signature"] = example["signature"].replace("A", "B", 1)
    with pytest.raises(InvalidSignature):
        verifier.verify(message, max_age=None, expect_tag="flask-hybrid")


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_the_servers_signer_makes_the_same_signature(example: dict[str, Any]) -> None:
    request = example["request"]
    answered = signatures.AnsweredRequest(request["method"], list(request["headers"].items()))
    refusal = example["response"]["headers"].get(MARKER)
    unmarked = [name for name in example["covered_components"] if name != '"x-hybrid-refusal"']
    assert signatures.covered_components(answered) == unmarked
    cek = example_cek(example)
    signed = signatures.sign_response(
        SIGNING_KEY if cek is None else signatures.answer_key(cek),
        example["kid"],
        status=example["response"]["status"],
        body=example["response"]["body"].encode(),
        request=answered,
        created=example["created"],
        refusal=refusal,
    )
    # RSASSA-PKCS1-v1_5 and HMAC are deterministic: the same Signature, the same base signed.
    assert dict(signed) == signed_headers(example)
    assert example["signature"] == f"hybrid=:{example['signature_b64']}:"
    assert example["signature_input"] == f"hybrid={example['signature_params']}"


def test_the_middleware_signs_the_refusal_as_in_the_example(make_app: Callable) -> None:
    """Served for real: identity_1 signs (only), so a request to its kid is unknown_key."""
    example = EXAMPLES[0]
    flask_app = make_app(
        HYBRID_IDENTITY_KEYS=[KEYS["identity_2"]["private_pem"]],
        HYBRID_SIGNING_KEYS=[KEYS["identity_1"]["private_pem"]],
    )
    hybrid_state(flask_app).clock = lambda: float(example["created"])
    request = example["request"]
    response = flask_app.test_client().open(
        request["target"],
        method=request["method"],
        headers=request["headers"],
        data=request["body"].encode(),
    )
    assert response.status_code == example["response"]["status"]
    assert response.get_data(as_text=True) == example["response"]["body"]
    for name, value in signed_headers(example).items():
        assert response.headers[name] == value, name


@pytest.fixture
def answer_app(vector_keys: dict[str, Any], tmp_path: Any) -> Flask:
    """The app of the HMAC examples: it answers their requests as they show, under the default
    policy; identity_1 is the signing key, and the S session has the vector session key."""
    flask_app = Flask(__name__, instance_path=str(tmp_path))
    flask_app.config.update(base_config(vector_keys))
    HybridEncryption(flask_app)
    hybrid_state(flask_app).clock = lambda: float(BODILESS["created"])

    @flask_app.get("/api/items")
    def items() -> tuple[str, int]:
        return "", 204

    @flask_app.post("/api/echo")
    def echo() -> Response:
        answer = FORMAT_S[0]["response"]
        return Response(answer["plaintext"], answer["status"], content_type="application/json")

    return flask_app


def example_session_headers(flask_app: Flask) -> dict[str, str]:
    handshake = hybrid_state(flask_app).sessions.create(
        DEVICE_ID,
        "127.0.0.1",
        private_key=SESSION_KEY,
        session_id=KEYS["session"]["session_id"],
    )
    return {"Authorization": f"Bearer {handshake.token}", "X-Device-Id": DEVICE_ID}


def serve_example(flask_app: Flask, example: dict[str, Any]) -> Any:
    request = example["request"]
    digest = signatures.content_digest(request["body"].encode())
    assert request["headers"]["Content-Digest"] == digest
    return flask_app.test_client().open(
        request["target"],
        method=request["method"],
        headers={**example_session_headers(flask_app), **request["headers"]},
        data=request["body"].encode(),
    )


def test_the_middleware_binds_the_bodiless_answer_as_in_the_example(answer_app: Flask) -> None:
    response = serve_example(answer_app, BODILESS)
    assert response.status_code == 204
    assert response.data == b""
    for name, value in signed_headers(BODILESS).items():
        assert response.headers[name] == value, name
    assert MARKER not in response.headers


def test_the_middleware_binds_the_sealed_answer_as_in_the_example(answer_app: Flask) -> None:
    """The server seals under a fresh random IV (no parameter picks it), so its answer is not
    the example's bytes: it opens to the same plaintext, and carries the example's
    Signature-Input and signature base but for the answer's own Content-Digest line."""
    example = SEALED
    response = serve_example(answer_app, example)
    assert response.status_code == example["response"]["status"]
    cek = example_cek(example)
    assert cek is not None
    assert formats.open_session_response(response.data, cek) == (
        FORMAT_S[0]["response"]["plaintext"].encode()
    )
    assert response.data != example["response"]["body"].encode()  # another IV
    for name in ("Content-Type", "X-Encryption-Enabled", "X-Plaintext-Content-Type"):
        assert response.headers[name] == example["response"]["headers"][name], name
    assert response.headers["Signature-Input"] == example["signature_input"]
    digest = signatures.content_digest(response.data)
    assert response.headers["Content-Digest"] == digest
    example_digest = example["response"]["headers"]["Content-Digest"]
    line = f'"content-digest": {example_digest}\n'
    assert example["signature_base"].count(line) == 1
    base = example["signature_base"].replace(line, f'"content-digest": {digest}\n')
    mac = hmac.new(signatures.answer_key(cek), base.encode(), hashlib.sha256).digest()
    assert response.headers["Signature"] == f"hybrid=:{base64.b64encode(mac).decode()}:"
    assert MARKER not in response.headers and "X-Response-Signature" not in response.headers


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_the_clients_verifier_accepts_the_example(example: dict[str, Any]) -> None:
    response = example["response"]
    verified = verify_response_signature(
        response["status"],
        response["headers"],
        response["body"].encode(),
        sent_request(example),
        {KEYS["identity_1"]["kid"]: SIGNING_KEY.public_key()},
        cek=example_cek(example),
    )
    assert verified == (example["kid"], response["headers"].get(MARKER))


def one_byte_changed(text: str, index: int) -> str:
    """``text`` with the character at ``index`` replaced by another of the same alphabet."""
    assert text[index].isalnum()
    replacement = "B" if text[index] == "A" else "A"
    return text[:index] + replacement + text[index + 1 :]


def mutate(example: dict[str, Any], part: str) -> tuple[int, dict[str, str], bytes, SentRequest]:
    """The example as a client would see it with one byte of ``part`` changed."""
    status = example["response"]["status"]
    headers = dict(example["response"]["headers"])
    body = example["response"]["body"].encode()
    request = example["request"]
    method, request_headers = request["method"], dict(request["headers"])
    if part == '"@status"':
        status += 1  # 401 -> 402, 204 -> 205
    elif part == '"content-digest"':
        headers["Content-Digest"] = one_byte_changed(headers["Content-Digest"], 12)
    elif part == '"x-hybrid-refusal"':
        headers[MARKER] = headers[MARKER][:-1] + "z"  # unknown_key -> unknown_kez
    elif part == "body":
        body = body[:-1] + bytes([body[-1] ^ 1]) if body else b"\x00"
    elif part == '"@method";req':
        method = chr(ord(method[0]) + 1) + method[1:]  # POST -> QOST, GET -> HET
    elif part == '"content-digest";req':
        request_headers["Content-Digest"] = one_byte_changed(request_headers["Content-Digest"], 12)
    elif part == '"x-encrypted-aes-key";req':
        key_header = request_headers["X-Encrypted-Aes-Key"]
        request_headers["X-Encrypted-Aes-Key"] = one_byte_changed(key_header, 4)
    elif part == "signature":
        headers["Signature"] = one_byte_changed(headers["Signature"], 20)
    elif part == "nothing":
        pass
    elif part == "created":
        headers["Signature-Input"] = headers["Signature-Input"].replace(
            f"created={example['created']}", f"created={example['created'] + 1}"
        )
    else:
        raise AssertionError(part)
    url = f"http://127.0.0.1{request['target']}"
    return status, headers, body, SentRequest(method, list(dict(request_headers).items()), url)


CASES = [
    pytest.param(example, part, id=f"{name}-{part}")
    for example, name in zip(EXAMPLES, IDS, strict=True)
    for part in [*example["covered_components"], "body", "signature", "created"]
]


@pytest.mark.parametrize(("example", "part"), CASES)
def test_the_clients_verifier_refuses_one_byte_changed(example: dict[str, Any], part: str) -> None:
    status, headers, body, request = mutate(example, part)
    assert (status, headers, body, request) != mutate(example, "nothing")
    with pytest.raises(SignatureError):
        verify_response_signature(
            status,
            headers,
            body,
            request,
            {KEYS["identity_1"]["kid"]: SIGNING_KEY.public_key()},
            cek=example_cek(example),
        )


@pytest.mark.parametrize("example", HMAC_EXAMPLES, ids=HMAC_IDS)
def test_the_clients_verifier_refuses_the_hmac_under_another_cek(example: dict[str, Any]) -> None:
    """Only the request's own CEK gives the answer key; the signing keys cannot vouch for it."""
    status, headers, body, request = mutate(example, "nothing")
    cek = example_cek(example)
    assert cek is not None
    signing_keys = {KEYS["identity_1"]["kid"]: SIGNING_KEY.public_key()}
    for wrong_cek in (one_byte_flipped(cek), None):
        with pytest.raises(SignatureError):
            verify_response_signature(status, headers, body, request, signing_keys, cek=wrong_cek)
    assert verify_response_signature(status, headers, body, request, signing_keys, cek=cek)


# --- the independent protocol client (tests/protocol_client.py) holds the server to the section
def protocol_keys() -> pc.Keys:
    return pc.Keys.from_pems([KEYS[name]["public_pem"] for name in KEYS["identity_key_order"]])


@pytest.mark.parametrize("example", EXAMPLES, ids=IDS)
def test_the_protocol_clients_verifier_agrees(example: dict[str, Any]) -> None:
    request = example["request"]
    cek = example_cek(example)
    sent = pc.SentRequest(request["method"], request["target"], request["headers"], cek)
    response = example["response"]
    assert request["headers"]["Content-Digest"] == pc.content_digest(request["body"].encode())
    answer = (response["status"], response["headers"], response["body"].encode())
    assert pc.verify_message_signature(protocol_keys(), sent, *answer)
    for part in [*example["covered_components"], "body", "signature"]:
        status, headers, body, changed = mutate(example, part)
        changed_sent = pc.SentRequest(changed.method, request["target"], changed.headers, cek)
        assert not pc.verify_message_signature(protocol_keys(), changed_sent, status, headers, body)
    if cek is not None:
        other_cek = pc.SentRequest(
            request["method"], request["target"], request["headers"], one_byte_flipped(cek)
        )
        assert not pc.verify_message_signature(protocol_keys(), other_cek, *answer)


def without_signatures(transport: pc.Transport) -> pc.Transport:
    """A proxy that strips the RFC 9421 headers from every answer but the key set's."""

    def send(method: str, target: str, headers: dict[str, str], body: bytes) -> Any:
        status, answer_headers, answer = transport(method, target, headers, body)
        kept = pc.CaseInsensitiveDict(answer_headers)
        if not target.endswith("/jwks.json"):
            kept.pop("Signature-Input", None)
        return status, kept, answer

    return send


def test_the_server_signs_what_the_section_says_for_the_protocol_client(
    make_app: Callable,
) -> None:
    """S, E and J through the real app with every required signature enforced."""
    flask_app = make_app()

    @flask_app.post("/api/lookalike")
    def lookalike() -> tuple[dict[str, str], int]:
        return {"error": "unknown_key", "message": "the app's own answer"}, 401

    transport = pc.flask_transport(flask_app.test_client())
    keys = pc.fetch_keys(transport)
    assert set(keys.signing_keys or {}) == {KEYS["identity_1"]["kid"], KEYS["identity_2"]["kid"]}
    order = {"order": {"sku": "X-1"}}

    session = pc.SessionClient(
        transport, keys, device_id="device-signatures", require_message_signatures=True
    )
    session.handshake()
    assert session.handshake_message_signature_ok is True
    assert session.request("POST", "/api/echo", order).json() == {"received": order}
    assert session.request("GET", "/api/echo").status == 405  # sealed: no signature needed

    plain = pc.EnvelopeClient(transport, keys, require_message_signatures=True)
    reply = plain.request("POST", "/api/echo", order)
    assert (reply.signature_ok, reply.message_signature_ok) == (True, True)
    reply = plain.request("POST", "/api/lookalike", order)  # the app's, not a refusal
    assert (reply.status, reply.message_signature_ok) == (401, True)
    assert "X-Hybrid-Refusal" not in reply.raw_headers
    sealed = pc.EnvelopeClient(
        transport, keys, encrypt_response=True, require_message_signatures=True
    )
    assert sealed.request("POST", "/api/echo", order).sealed

    jwe = pc.JweClient(transport, keys, require_message_signatures=True)
    assert jwe.request("POST", "/api/echo", order).json() == {"received": order}
    session.adopt(jwe.handshake("device-signatures"))
    assert session.close() == 204
    with pytest.raises(pc.ProtocolError) as refused:
        session.request("POST", "/api/echo", order)
    assert refused.value.code == "invalid_session"
    assert (refused.value.signature_ok, refused.value.message_signature_ok) == (True, True)
    assert refused.value.refusal_marked is True

    stripped = pc.SessionClient(
        without_signatures(transport), keys, require_message_signatures=True
    )
    with pytest.raises(pc.ProtocolViolation, match="request-bound signature"):
        stripped.handshake()
    lenient = pc.SessionClient(without_signatures(transport), keys)
    lenient.handshake()
    assert lenient.handshake_message_signature_ok is None
