"""Each format end to end, driven by the independent client in ``protocol_client`` (written from
PROTOCOL.md, with jwcrypto for J), through Flask's test client and through real HTTP servers on
both store backends."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from . import protocol_client as pc
from .conftest import LiveServer

ORDER = {
    "order": {
        "id": 1042,
        "customer": "Zoë Ångström",
        "lines": [
            {"sku": "X-1", "qty": 2, "price": "9.50"},
            {"sku": "Y-2", "qty": 1, "price": "120.00"},
        ],
    }
}


@pytest.fixture(params=["flask", "http-memory", "http-redis"])
def transport(
    request: pytest.FixtureRequest,
    make_app: Callable[..., Flask],
    live_server_factory: Callable[..., LiveServer],
) -> Iterator[pc.Transport]:
    if request.param == "flask":
        yield pc.flask_transport(make_app().test_client())
        return
    config: dict[str, Any] = {}
    if request.param == "http-redis":
        config = {
            "HYBRID_STORE_URL": request.getfixturevalue("redis_url"),
            "HYBRID_STORE_KEY_PREFIX": request.getfixturevalue("redis_prefix"),
            "HYBRID_RATELIMIT_STORAGE_URL": "memory://",
        }
    live = live_server_factory(**config)
    with pc.http_transport(live.url) as http:
        yield http


@pytest.fixture
def keys(transport: pc.Transport) -> pc.Keys:
    return pc.fetch_keys(transport)


def test_keys_endpoints(keys: pc.Keys, vector_keys: dict) -> None:
    assert keys.current_kid == vector_keys["identity_1"]["kid"]
    assert set(keys.public_keys) == {
        vector_keys["identity_1"]["kid"],
        vector_keys["identity_2"]["kid"],
    }


# --- format S -----------------------------------------------------------------------------------
@pytest.mark.parametrize("reuse_key", [False, True], ids=["fresh-cek", "reused-cek"])
def test_format_s(transport: pc.Transport, keys: pc.Keys, reuse_key: bool) -> None:
    client = pc.SessionClient(transport, keys, device_id="browser-7f3a9c", reuse_key=reuse_key)
    handshake = client.handshake()
    assert list(handshake) == ["token", "publicKey", "sessionId", "expiresIn"]
    assert handshake["expiresIn"] == 3600
    assert client.token_claims is not None
    assert client.token_claims["exp"] - client.token_claims["iat"] == 3600
    assert client.token_claims["deviceId"] == "browser-7f3a9c"
    for _ in range(3):
        reply = client.request("POST", "/api/echo", ORDER)
        assert reply.sealed and reply.status == 200
        assert reply.json() == {"received": ORDER}
        assert reply.headers["Content-Type"] == "application/json"
    # A bodiless request carries its key in a header and still gets a sealed answer.
    reply = client.request("GET", "/api/echo")
    assert reply.sealed and reply.status == 405
    assert client.close() == 204
    with pytest.raises(pc.ProtocolError) as refused:
        client.request("POST", "/api/echo", ORDER)
    assert refused.value.status == 401 and refused.value.code == "invalid_session"
    assert refused.value.signature_ok is True


# --- format E -----------------------------------------------------------------------------------
@pytest.mark.parametrize("padding", ["pkcs1v15", "oaep"])
@pytest.mark.parametrize("cek_form", ["b64_text", "raw"])
@pytest.mark.parametrize("with_kid", [False, True], ids=["no-kid", "kid"])
def test_format_e_signed(
    transport: pc.Transport, keys: pc.Keys, padding: str, cek_form: str, with_kid: bool
) -> None:
    client = pc.EnvelopeClient(
        transport, keys, padding=padding, cek_form=cek_form, with_kid=with_kid
    )
    reply = client.request("POST", "/api/echo", ORDER)
    assert not reply.sealed and reply.status == 200
    assert reply.json() == {"received": ORDER}
    assert reply.signature_ok is True  # over the exact bytes that travelled
    assert reply.raw_headers["X-Response-Signature-Kid"] == keys.current_kid


@pytest.mark.parametrize("padding", ["pkcs1v15", "oaep"])
def test_format_e_sealed_response(transport: pc.Transport, keys: pc.Keys, padding: str) -> None:
    client = pc.EnvelopeClient(transport, keys, padding=padding, encrypt_response=True)
    reply = client.request("POST", "/api/echo", ORDER)
    assert reply.sealed and reply.json() == {"received": ORDER}
    assert "X-Response-Signature" not in reply.raw_headers


def test_format_e_to_the_older_identity_key(transport: pc.Transport, keys: pc.Keys) -> None:
    older = next(kid for kid in keys.public_keys if kid != keys.current_kid)
    for with_kid in (False, True):
        client = pc.EnvelopeClient(transport, keys, kid=older, with_kid=with_kid)
        assert client.request("POST", "/api/echo", ORDER).json() == {"received": ORDER}


# --- format J -----------------------------------------------------------------------------------
@pytest.mark.parametrize("reuse_key", [False, True], ids=["fresh-cek", "reused-cek"])
def test_format_j(transport: pc.Transport, keys: pc.Keys, reuse_key: bool) -> None:
    client = pc.JweClient(transport, keys, reuse_key=reuse_key)
    for _ in range(3):
        reply = client.request("POST", "/api/echo", ORDER)
        assert reply.sealed and reply.status == 200
        assert reply.json() == {"received": ORDER}
        assert reply.jose_header is not None
        assert reply.jose_header["req"] == client.last_jti
        assert reply.jose_header["cty"] == "application/json"
    reply = client.request("GET", "/api/echo")  # X-Hybrid-JWE header form
    assert reply.sealed and reply.status == 405
    reply = client.request("POST", "/api/echo?x=1&y=%C3%A9", ORDER)
    assert reply.json() == {"received": ORDER}


def test_format_j_replay_stale_and_binding(transport: pc.Transport, keys: pc.Keys) -> None:
    client = pc.JweClient(transport, keys)
    jwe, cek = client.build("POST", "/api/echo", b'{"n":1}')
    assert client.request("POST", "/api/echo", jwe=jwe, cek=cek).status == 200
    cases = {
        "replayed jti": ("POST", "/api/echo", jwe),
        "stale iat": (
            "POST",
            "/api/echo",
            client.build("POST", "/api/echo", b"{}", iat=int(time.time()) - 301)[0],
        ),
        "future iat": (
            "POST",
            "/api/echo",
            # rounded up: int() would put it up to a second nearer, inside the window
            client.build("POST", "/api/echo", b"{}", iat=math.ceil(time.time()) + 301)[0],
        ),
        "wrong htm": ("POST", "/api/echo", client.build("PUT", "/api/echo", b"{}")[0]),
        "wrong htu": ("POST", "/api/echo", client.build("POST", "/api/echo?x=1", b"{}")[0]),
        "other path": ("POST", "/api/other", client.build("POST", "/api/echo", b"{}")[0]),
    }
    for case, (method, target, token) in cases.items():
        with pytest.raises(pc.ProtocolError) as refused:
            client.request(method, target, jwe=token, cek=cek)
        assert (refused.value.status, refused.value.code) == (409, "replayed_request"), case


def test_format_j_handshake_and_session_kid(transport: pc.Transport, keys: pc.Keys) -> None:
    identity = pc.JweClient(transport, keys)
    handshake = identity.handshake("device-j-1")
    assert list(handshake) == ["token", "publicKey", "sessionId", "expiresIn"]
    session = pc.SessionClient(transport, keys, device_id="device-j-1")
    session.adopt(handshake)
    # The J handshake's session serves format S...
    assert session.request("POST", "/api/echo", ORDER).json() == {"received": ORDER}
    # ...and J requests encrypted to the session key, with the session headers.
    to_session = pc.JweClient(transport, keys, session=session)
    assert to_session.request("POST", "/api/echo", ORDER).json() == {"received": ORDER}
    assert session.close() == 204
    with pytest.raises(pc.ProtocolError) as refused:
        to_session.request("POST", "/api/echo", ORDER)
    assert refused.value.code == "invalid_session"


def test_unknown_kid_then_refetch(transport: pc.Transport, keys: pc.Keys) -> None:
    stale = pc.Keys.from_pems([_throwaway_public_pem()])
    client = pc.JweClient(transport, stale, refetch_on_unknown_key=True)
    reply = client.request("POST", "/api/echo", ORDER)
    assert reply.json() == {"received": ORDER}
    assert client.keys.current_kid == keys.current_kid


def _throwaway_public_pem() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
