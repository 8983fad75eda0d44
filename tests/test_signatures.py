"""``core/signatures``: the signature base flask-hybrid writes equals the one the kept library
``http-message-signatures`` builds, and what it signs verifies there, for every shape of
request the server answers."""

from __future__ import annotations

import base64
import datetime
import time
from typing import Any

import http_sf
import pytest
from cryptography.hazmat.primitives import hashes, hmac
from http_message_signatures import HTTPMessageSigner, algorithms

from flask_hybrid.core import rsa, signatures
from flask_hybrid.core.signatures import AnsweredRequest, content_digest

from .conftest import load_vectors

SIGNING_KEY = rsa.load_private_key(load_vectors("keys")["identity_1"]["private_pem"])
KID = load_vectors("keys")["identity_1"]["kid"]
BODY = b'{"error":"unknown_key","message":"x"}'

REQUESTS = [
    pytest.param(AnsweredRequest("POST", [("Content-Digest", content_digest(b"{}"))]), id="body"),
    pytest.param(
        AnsweredRequest(
            "GET", [("Content-Digest", content_digest(b"")), ("X-Hybrid-JWE", "a.b.c.d.e")]
        ),
        id="jwe-header",
    ),
    pytest.param(
        AnsweredRequest(
            "DELETE",
            [("content-digest", content_digest(b"")), ("x-encrypted-aes-key", " QUJD ")],
        ),
        id="aes-key-header-padded",
    ),
    pytest.param(
        AnsweredRequest("POST", [("Content-Digest", "sha-256=:AA==:"), ("Content-Digest", "x")]),
        id="two-field-lines",
    ),
    pytest.param(AnsweredRequest("PUT", []), id="no-digest"),
    pytest.param(AnsweredRequest("post", [("Content-Digest", "\x01bad")]), id="uncoverable"),
]


def library_base(headers: list[tuple[str, str]], request: AnsweredRequest, status: int) -> bytes:
    """The base http-message-signatures builds from the Signature-Input we sent."""
    signature_input = dict(headers)["Signature-Input"]
    member = http_sf.parse(signature_input.encode(), tltype="dictionary")[signatures.LABEL]
    items, params = member
    components = [http_sf.ser((name, dict(parameters))) for name, parameters in items]
    algorithm: Any = (
        algorithms.HMAC_SHA256 if params["alg"] == "hmac-sha256" else algorithms.RSA_V1_5_SHA256
    )
    method_covered = '"@method";req' in components
    view_request = request if method_covered else AnsweredRequest("GET", request.headers)
    prepared = HTTPMessageSigner(signature_algorithm=algorithm).prepare(
        signatures._view(status, headers, view_request),
        key_id=params["keyid"],
        created=datetime.datetime.fromtimestamp(params["created"], tz=datetime.timezone.utc),
        label=signatures.LABEL,
        tag=signatures.TAG,
        covered_component_ids=components,
        use_existing_digest=True,
    )
    assert f"{signatures.LABEL}={prepared.signature_params}" == signature_input
    return prepared.signature_base


@pytest.mark.parametrize("request_", REQUESTS)
@pytest.mark.parametrize("refusal", [None, "unknown_key"])
@pytest.mark.parametrize("hmac_key", [False, True], ids=["rsa", "hmac"])
def test_our_base_is_the_librarys_and_verifies(
    request_: AnsweredRequest, refusal: str | None, hmac_key: bool
) -> None:
    cek = b"\x07" * 32
    key: Any = signatures.answer_key(cek) if hmac_key else SIGNING_KEY
    kid = signatures.CEK_KEYID if hmac_key else KID
    headers = signatures.sign_response(
        key, kid, status=401, body=BODY, request=request_, created=time.time(), refusal=refusal
    )
    base = library_base(headers, request_, 401)
    signature = base64.b64decode(dict(headers)["Signature"].split("=:", 1)[1].rstrip(":"))
    if hmac_key:
        mac = hmac.HMAC(key, hashes.SHA256())
        mac.update(base)
        mac.verify(signature)
    else:
        assert rsa.verify(SIGNING_KEY.public_key(), signature, base)
