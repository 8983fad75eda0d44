"""Start-up: the extension pattern, configuration errors that name their key, development keys,
the explicit wiring, and what the hot path must not do."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, Response, request

import flask_hybrid.extension
from flask_hybrid import (
    HybridEncryption,
    HybridMiddleware,
    HybridState,
    KeyPool,
    SessionManager,
    Settings,
    create_blueprint,
)
from flask_hybrid.cli import cli
from flask_hybrid.core import aead, formats, rsa
from flask_hybrid.core.encoding import b64decode, b64encode
from flask_hybrid.core.keyring import KeyRing
from flask_hybrid.stores import MemoryStore

from .builders import e_envelope, new_session, s_envelope, session_headers, state_of
from .conftest import JWT_SECRET, base_config

ECHO = b'{"n":1}'


def bare_app(tmp_path: Path, **config: Any) -> Flask:
    flask_app = Flask("bare", instance_path=str(tmp_path / "instance"))
    flask_app.config.update(config)
    return flask_app


def test_init_app_pattern_keeps_state_in_extensions(tmp_path: Path, vector_keys: dict) -> None:
    hybrid = HybridEncryption()
    flask_app = bare_app(tmp_path, **base_config(vector_keys))
    hybrid.init_app(flask_app)
    assert isinstance(flask_app.extensions["hybrid"], HybridState)
    assert not hasattr(hybrid, "app")
    assert flask_app.config["HYBRID_SESSION_TTL"] == 3600  # defaults are visible in the config
    assert isinstance(flask_app.wsgi_app, HybridMiddleware)
    other = bare_app(tmp_path / "other", **base_config(vector_keys))
    hybrid.init_app(other)  # one extension object, several apps
    assert other.extensions["hybrid"] is not flask_app.extensions["hybrid"]


@pytest.mark.parametrize(
    ("missing", "named"),
    [("HYBRID_IDENTITY_KEYS", "HYBRID_IDENTITY_KEYS"), ("HYBRID_JWT_SECRET", "HYBRID_JWT_SECRET")],
)
def test_production_refuses_to_start_without_keys(
    tmp_path: Path, vector_keys: dict, missing: str, named: str
) -> None:
    config = base_config(vector_keys, TESTING=False)
    del config[missing]
    with pytest.raises(RuntimeError, match=named):
        HybridEncryption(bare_app(tmp_path, **config))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("HYBRID_JWT_SECRET", "too-short"),
        ("HYBRID_SESSION_TTL", 0),
        ("HYBRID_MAX_BODY", "big"),
        ("HYBRID_SIGN_RESPONSES", "sometimes"),
        ("HYBRID_FORMATS", ["S", "X"]),
        ("HYBRID_URL_PREFIX", "hybrid/"),
    ],
)
def test_bad_values_name_their_key(tmp_path: Path, vector_keys: dict, key: str, value: Any) -> None:
    with pytest.raises(ValueError, match=key):
        HybridEncryption(bare_app(tmp_path, **base_config(vector_keys, **{key: value})))


def test_identity_keys_from_files_and_too_small_keys(tmp_path: Path, vector_keys: dict) -> None:
    pem_file = tmp_path / "identity.pem"
    pem_file.write_text(vector_keys["identity_2"]["private_pem"])
    flask_app = bare_app(tmp_path, **base_config(vector_keys, HYBRID_IDENTITY_KEYS=str(pem_file)))
    HybridEncryption(flask_app)
    assert state_of(flask_app).keyring.current.kid == vector_keys["identity_2"]["kid"]
    small = rsa.private_pem(rsa.generate_private_key(1024)).decode()
    with pytest.raises(ValueError, match="2048"):
        HybridEncryption(bare_app(tmp_path, **base_config(vector_keys, HYBRID_IDENTITY_KEYS=small)))


def test_format_e_needs_implicit_rejection(
    tmp_path: Path, vector_keys: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(flask_hybrid.extension, "has_implicit_rejection", lambda key: False)
    with pytest.raises(RuntimeError, match="implicit rejection"):
        HybridEncryption(bare_app(tmp_path, **base_config(vector_keys)))
    without_e = bare_app(tmp_path, **base_config(vector_keys, HYBRID_FORMATS=["S", "J"]))
    HybridEncryption(without_e)  # S and J need no PKCS#1 v1.5


def test_this_openssl_has_implicit_rejection(vector_keys: dict) -> None:
    key = rsa.load_private_key(vector_keys["identity_1"]["private_pem"])
    assert rsa.has_implicit_rejection(key)


DEV_KEY_SCRIPT = """
import sys
from flask import Flask
from flask_hybrid import HybridEncryption
app = Flask("dev", instance_path=sys.argv[1])
app.config["HYBRID_DEVELOPMENT"] = True
HybridEncryption(app)
state = app.extensions["hybrid"]
print(
    state.keyring.current.kid,
    state.sessions._jwt_secret.hex(),
    state.keyring.hpke.keys[0].public_bytes.hex(),
)
"""


def test_development_keys_are_made_once_and_shared_by_processes(tmp_path: Path) -> None:
    instance = tmp_path / "instance"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", DEV_KEY_SCRIPT, str(instance)],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert all(process.returncode == 0 for process in processes)
    assert len(outputs) == 1, outputs  # every process agrees on the key and the secret
    key_file = instance / "hybrid-identity-key.pem"
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert sorted(path.name for path in instance.iterdir()) == [
        "hybrid-hpke-key.pem",  # format H's X25519 key
        "hybrid-identity-key.pem",
        "hybrid-jwt-secret",
    ]


def test_explicit_wiring(vector_keys: dict) -> None:
    keyring = KeyRing.from_pems([vector_keys["identity_1"]["private_pem"]])
    state = HybridState(
        keyring=keyring,
        sessions=SessionManager(MemoryStore(), jwt_secret=JWT_SECRET),
        settings=Settings(url_prefix="/crypto"),
    )
    flask_app = Flask("explicit")
    flask_app.register_blueprint(create_blueprint(state))
    flask_app.wsgi_app = HybridMiddleware(flask_app.wsgi_app, state)  # type: ignore[method-assign]

    @flask_app.post("/api/echo")
    def echo() -> dict:
        return {"received": request.get_json()}

    client = flask_app.test_client()
    assert client.get("/crypto/jwks.json").get_json() == keyring.jwks()
    envelope, cek = e_envelope(keyring.current.private_key.public_key(), ECHO)
    response = client.post(
        "/api/echo",
        json=envelope,
        headers={"X-Encryption-Enabled": "true", "X-Encrypt-Response": "true"},
    )
    assert json.loads(formats.open_envelope_response(response.data, cek)) == {"received": {"n": 1}}
    cek = aead.new_cek()
    handshake = client.post("/crypto/session", json={"aesKey": b64encode(cek), "deviceId": "x"})
    assert handshake.status_code == 201 and "X-Response-Signature" in handshake.headers


CORE_IMPORT_SCRIPT = """
import sys
import flask_hybrid.core.formats, flask_hybrid.core.jwe, flask_hybrid.core.keyring
import flask_hybrid.core.rsa, flask_hybrid.core.aead, flask_hybrid.core.signatures
import flask_hybrid.errors, flask_hybrid.signals, flask_hybrid.stores, flask_hybrid.client
loaded = {name.split(".")[0] for name in sys.modules}
print(sorted(loaded & {"flask", "werkzeug", "redis", "jwt", "flask_limiter"}))
"""


def test_core_is_framework_free() -> None:
    result = subprocess.run(
        [sys.executable, "-c", CORE_IMPORT_SCRIPT], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_hot_path_never_parses_pem(
    make_app: Callable[..., Flask],
    monkeypatch: pytest.MonkeyPatch,
    redis_url: str,
    redis_prefix: str,
) -> None:
    config = {"HYBRID_STORE_URL": redis_url, "HYBRID_STORE_KEY_PREFIX": redis_prefix}
    first, second = make_app(**config), make_app(**config)  # two "processes" on one Redis
    session = new_session(first)
    parsed: list[bool] = []
    real_loader = rsa.serialization.load_pem_private_key

    def counting_loader(*args: Any, **kwargs: Any) -> Any:
        parsed.append(kwargs.get("unsafe_skip_rsa_key_validation", False))
        return real_loader(*args, **kwargs)

    monkeypatch.setattr(rsa.serialization, "load_pem_private_key", counting_loader)
    for flask_app in (first, second, first, second):
        for _ in range(3):
            body, _ = s_envelope(session, ECHO)
            response = flask_app.test_client().post(
                "/api/echo", json=body, headers=session_headers(session)
            )
            assert response.status_code == 200
    # The process that made the session never parses; the other parses once, without the
    # expensive validation (the key was generated by this server), and caches it.
    assert parsed == [True]


def test_key_pool_hands_out_distinct_pregenerated_keys() -> None:
    made: list[rsa.PrivateKey] = []

    def generate() -> rsa.PrivateKey:
        key = rsa.generate_private_key()
        made.append(key)
        return key

    pool = KeyPool(2, generate=generate)
    first = pool.take()
    import time

    deadline = time.monotonic() + 10
    while len(made) < 3 and time.monotonic() < deadline:  # the thread refills in the background
        time.sleep(0.05)
    second, third = pool.take(), pool.take()
    assert len({id(first), id(second), id(third)}) == 3
    assert second in made and third in made


# --- response handling -------------------------------------------------------------------------
def test_signing_policies(make_app: Callable[..., Flask]) -> None:
    for policy, plain_signed, e_signed in (("all", True, True), ("none", False, False)):
        flask_app = make_app(HYBRID_SIGN_RESPONSES=policy)
        client = flask_app.test_client()
        plain = client.post("/api/echo", json={"a": 1})
        assert ("X-Response-Signature" in plain.headers) is plain_signed
        envelope, _ = e_envelope(state_of(flask_app).keyring.current.private_key.public_key(), ECHO)
        response = client.post("/api/echo", json=envelope, headers={"X-Encryption-Enabled": "true"})
        assert ("X-Response-Signature" in response.headers) is e_signed
        if e_signed:
            public_key = state_of(flask_app).keyring.current.private_key.public_key()
            signature = b64decode(response.headers["X-Response-Signature"])
            assert rsa.verify(public_key, signature, response.data)


def test_status_and_headers_are_kept_and_bodiless_statuses_unsealed(
    make_app: Callable[..., Flask],
) -> None:
    flask_app = make_app()

    @flask_app.post("/api/created")
    def created() -> Response:
        response = Response('{"id":7}', 201, content_type="application/vnd.order+json")
        response.headers["X-Request-Id"] = "abc"
        response.headers["Content-Encoding"] = "identity"
        return response

    @flask_app.post("/api/nothing")
    def nothing() -> Response:
        return Response(status=204)

    session = new_session(flask_app)
    client = flask_app.test_client()
    body, cek = s_envelope(session, ECHO)
    response = client.post("/api/created", json=body, headers=session_headers(session))
    assert response.status_code == 201
    assert response.headers["X-Request-Id"] == "abc"
    assert response.headers["X-Plaintext-Content-Type"] == "application/vnd.order+json"
    assert response.headers["X-Plaintext-Content-Encoding"] == "identity"
    assert "Content-Encoding" not in response.headers
    assert int(response.headers["Content-Length"]) == len(response.data)
    assert formats.open_session_response(response.data, cek) == b'{"id":7}'
    body, _ = s_envelope(session, ECHO)
    response = client.post("/api/nothing", json=body, headers=session_headers(session))
    assert response.status_code == 204 and response.data == b""


def test_view_sees_an_ordinary_request(make_app: Callable[..., Flask]) -> None:
    flask_app = make_app()
    seen: dict[str, Any] = {}

    @flask_app.post("/api/inspect")
    def inspect() -> dict:
        seen.update(
            content_type=request.content_type,
            content_length=request.content_length,
            json=request.get_json(),
            transfer_encoding=request.headers.get("Transfer-Encoding"),
        )
        return {}

    session = new_session(flask_app)
    plaintext = '{"name":"Zoë"}'.encode()
    body, _ = s_envelope(session, plaintext)
    response = flask_app.test_client().post(
        "/api/inspect", json=body, headers=session_headers(session)
    )
    assert response.status_code == 200
    assert seen == {
        "content_type": "application/json; charset=utf-8",
        "content_length": len(plaintext),
        "json": {"name": "Zoë"},
        "transfer_encoding": None,
    }


def test_cli_makes_keys_and_secrets_and_shows_loaded_keys(app: Flask, tmp_path: Path) -> None:
    runner = app.test_cli_runner()
    key_path = tmp_path / "identity.pem"
    result = runner.invoke(cli, ["keygen", str(key_path), "--bits", "2048"])
    assert result.exit_code == 0, result.output
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert rsa.load_private_key(key_path.read_bytes()).key_size == 2048
    again = runner.invoke(cli, ["keygen", str(key_path)])
    assert again.exit_code != 0  # never overwrites a key
    secret = runner.invoke(cli, ["secret"]).output.strip()
    assert len(bytes.fromhex(secret)) == 32
    shown = json.loads(runner.invoke(cli, ["keys"]).output)
    assert shown == state_of(app).keyring.jwks()


def test_ending_a_session_checks_the_device_id(make_app: Callable[..., Flask]) -> None:
    """DELETE {prefix}/session is checked as every S request is: token, record, device id."""
    flask_app = make_app()
    client = flask_app.test_client()
    session = new_session(flask_app)
    bearer = {"Authorization": f"Bearer {session['token']}"}

    def echo_status() -> int:
        body, _ = s_envelope(session, ECHO)
        return client.post("/api/echo", json=body, headers=session_headers(session)).status_code

    for headers in (bearer, {**bearer, "X-Device-Id": "someone-else"}):
        refused = client.delete("/hybrid/session", headers=headers)
        assert refused.status_code == 401
        assert refused.get_json()["error"] == "invalid_session"
    assert echo_status() == 200  # the session survived both attempts
    # A record that disagrees with the token (a tampered store) is refused too.
    store = state_of(flask_app).sessions.store
    record_key = f"session:{session['sessionId']}"
    record = json.loads(store.get(record_key) or b"{}")
    store.set(record_key, json.dumps({**record, "deviceId": "other"}).encode(), 60)
    owner = {**bearer, "X-Device-Id": session["device_id"]}
    assert client.delete("/hybrid/session", headers=owner).status_code == 401
    store.set(record_key, json.dumps(record).encode(), 60)
    assert client.delete("/hybrid/session", headers=owner).status_code == 204
    assert echo_status() == 401


def test_new_keys_have_visible_defaults(app: Flask) -> None:
    assert app.config["HYBRID_JWE_LIMIT"] == "600 per minute"
    assert app.config["HYBRID_CLOCK_SKEW"] == 5
    for key in ("HYBRID_SIGNING_KEYS", "HYBRID_REPLAY_STORE_URL", "HYBRID_REPLAY_KEY_PREFIX"):
        assert key in app.config and app.config[key] is None
