"""Property: flip any byte of any field of any format and the answer is always the one 400."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_hybrid.core.encoding import b64decode, b64encode, b64url_decode, b64url_encode
from flask_hybrid.errors import InvalidPayload, error_body

from .builders import e_envelope, j_header, j_token, new_session, s_envelope, session_headers
from .conftest import base_config

INVALID_PAYLOAD = error_body(InvalidPayload)
PLAINTEXT = b'{"order":{"id":7,"lines":[{"sku":"A-1","qty":2,"price":"19.90"}]}}'
PROPERTY_SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.fixture(scope="module")
def prop_app(vector_keys: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Flask:
    import app as demo

    flask_app = demo.create_app(base_config(vector_keys))
    flask_app.instance_path = str(tmp_path_factory.mktemp("instance"))
    return flask_app


def flip(data: bytes, index: int, mask: int) -> bytes:
    index %= len(data)
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


def assert_invalid_payload(response: Any) -> None:
    assert response.status_code == 400, response.data
    assert response.data == INVALID_PAYLOAD


@pytest.fixture(scope="module")
def s_request(prop_app: Flask) -> tuple[dict, dict[str, str]]:
    session = new_session(prop_app)
    envelope, _ = s_envelope(session, PLAINTEXT)
    return envelope, session_headers(session)


@PROPERTY_SETTINGS
@given(
    field=st.sampled_from(["encryptedAesKey", "encryptedData", "iv", "authTag"]),
    index=st.integers(min_value=0),
    mask=st.integers(min_value=1, max_value=255),
)
def test_format_s_any_flipped_byte(
    prop_app: Flask, s_request: tuple[dict, dict], field: str, index: int, mask: int
) -> None:
    envelope, headers = s_request
    tampered = {**envelope, field: b64encode(flip(b64decode(envelope[field]), index, mask))}
    response = prop_app.test_client().post("/api/echo", json=tampered, headers=headers)
    assert_invalid_payload(response)


@pytest.fixture(scope="module")
def e_requests(prop_app: Flask) -> dict[str, dict]:
    public_key = prop_app.extensions["hybrid"].keyring.current.private_key.public_key()
    return {
        "pkcs1-text": e_envelope(public_key, PLAINTEXT, oaep=False, b64_text=True)[0],
        "pkcs1-raw": e_envelope(public_key, PLAINTEXT, oaep=False)[0],
        "oaep-raw": e_envelope(public_key, PLAINTEXT, oaep=True)[0],
    }


@PROPERTY_SETTINGS
@given(
    variant=st.sampled_from(["pkcs1-text", "pkcs1-raw", "oaep-raw"]),
    field=st.sampled_from(["ek", "iv", "ct", "alg"]),
    index=st.integers(min_value=0),
    mask=st.integers(min_value=1, max_value=255),
)
def test_format_e_any_flipped_byte(
    prop_app: Flask, e_requests: dict, variant: str, field: str, index: int, mask: int
) -> None:
    envelope = e_requests[variant]
    if field == "alg":
        value: Any = flip(envelope["alg"].encode(), index, mask).decode("latin-1")
    else:
        value = b64encode(flip(b64decode(envelope[field]), index, mask))
    response = prop_app.test_client().post(
        "/api/echo",
        data=json.dumps({**envelope, field: value}),
        headers={"X-Encryption-Enabled": "true", "Content-Type": "application/json"},
    )
    assert_invalid_payload(response)


@pytest.fixture(scope="module")
def j_request(prop_app: Flask) -> str:
    keyring = prop_app.extensions["hybrid"].keyring
    header = j_header(keyring.current.kid, "POST", "/api/echo")
    return j_token(keyring.current.private_key.public_key(), header, PLAINTEXT)[0]


def _kid_span(header_json: bytes) -> range:
    start = header_json.index(b'"kid":"') + len(b'"kid":"')
    return range(start, header_json.index(b'"', start))


@PROPERTY_SETTINGS
@given(
    segment=st.integers(min_value=0, max_value=4),
    index=st.integers(min_value=0),
    mask=st.integers(min_value=1, max_value=255),
)
def test_format_j_any_flipped_byte(
    prop_app: Flask,
    j_request: str,
    segment: int,
    index: int,
    mask: int,
) -> None:
    parts = j_request.split(".")
    raw = b64url_decode(parts[segment])
    if segment == 1 or raw:
        position = index % len(raw)
        if segment == 0 and position in _kid_span(raw):
            # A different kid names another key: that is 401 unknown_key by the check order.
            position = (max(_kid_span(raw)) + 2 + index) % len(raw)
            if position in _kid_span(raw):
                position = 0
        parts[segment] = b64url_encode(flip(raw, position, mask))
    response = prop_app.test_client().post(
        "/api/echo", data=".".join(parts), headers={"Content-Type": "application/jose"}
    )
    assert_invalid_payload(response)


def test_untampered_requests_are_accepted(
    prop_app: Flask, s_request: tuple, e_requests: dict, j_request: str
) -> None:
    """The property tests above would pass vacuously if the originals were refused too."""
    client = prop_app.test_client()
    envelope, headers = s_request
    assert client.post("/api/echo", json=envelope, headers=headers).status_code == 200
    for envelope in e_requests.values():
        response = client.post("/api/echo", json=envelope, headers={"X-Encryption-Enabled": "TRUE"})
        assert response.status_code == 200
        assert response.get_json() == {"received": json.loads(PLAINTEXT)}
    response = client.post(
        "/api/echo", data=j_request, headers={"Content-Type": "application/jose"}
    )
    assert response.status_code == 200
