"""Request builders for tests that need to craft (and break) messages field by field."""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

from flask import Flask

from flask_hybrid.core import aead, formats, jwe, rsa
from flask_hybrid.core.encoding import b64encode, b64url_encode
from flask_hybrid.state import HybridState

DEVICE_ID = "device-under-test"


def state_of(flask_app: Flask) -> HybridState:
    return flask_app.extensions["hybrid"]


def new_session(flask_app: Flask, device_id: str = DEVICE_ID, ip: str = "127.0.0.1") -> dict:
    """A session made through the real handshake view; returns token, public key and ids."""
    cek = aead.new_cek()
    response = flask_app.test_client().post(
        "/hybrid/session",
        json={"aesKey": b64encode(cek), "deviceId": device_id},
        environ_base={"REMOTE_ADDR": ip},
    )
    assert response.status_code == 201, response.data
    opened = formats.open_session_response(response.data, cek)
    session = json.loads(opened)
    session["public_key"] = rsa.load_public_key(session["publicKey"])
    session["device_id"] = device_id
    return session


def session_headers(session: dict) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {session['token']}",
        "X-Device-Id": session["device_id"],
        "X-Encryption-Enabled": "true",
    }


def s_envelope(session: dict, plaintext: bytes, cek: bytes | None = None) -> tuple[dict, bytes]:
    cek = cek or aead.new_cek()
    wrapped_key = rsa.wrap_oaep(session["public_key"], cek)
    return json.loads(formats.seal_session_request(cek, wrapped_key, plaintext)), cek


def e_envelope(
    public_key: rsa.PublicKey,
    plaintext: bytes,
    *,
    oaep: bool = True,
    b64_text: bool = False,
    kid: str | None = None,
) -> tuple[dict, bytes]:
    cek = aead.new_cek()
    key_material = base64.b64encode(cek) if b64_text else cek
    padding = rsa.OAEP_SHA256 if oaep else rsa.PKCS1V15
    alg = formats.ENVELOPE_ALG_OAEP if oaep else formats.ENVELOPE_ALG_PKCS1
    wrapped_key = public_key.encrypt(key_material, padding)
    body = formats.seal_envelope_request(alg, wrapped_key, cek, plaintext, kid=kid)
    return json.loads(body), cek


def j_header(kid: str, method: str, target: str, **overrides: Any) -> dict[str, Any]:
    header: dict[str, Any] = {
        "alg": "RSA-OAEP-256",
        "enc": "A256GCM",
        "kid": kid,
        "htm": method,
        "htu": target,
        "iat": int(time.time()),
        "jti": b64url_encode(os.urandom(16)),
        "cty": "json",
    }
    header.update(overrides)
    return {key: value for key, value in header.items() if value is not None}


def j_token(
    public_key: rsa.PublicKey, header: dict[str, Any], plaintext: bytes
) -> tuple[str, bytes]:
    cek = aead.new_cek()
    return jwe.encrypt(header, plaintext, cek, public_key=public_key), cek
