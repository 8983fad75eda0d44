"""Every row of PROTOCOL.md's error table, triggered through the app with exact status and body."""

from __future__ import annotations

import io
import json
import math
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from flask import Flask

from flask_hybrid import HybridMiddleware, require_encryption
from flask_hybrid.core import aead, formats, rsa
from flask_hybrid.core.encoding import b64encode
from flask_hybrid.errors import (
    ERRORS,
    EncryptionRequired,
    InvalidPayload,
    InvalidSession,
    PayloadTooLarge,
    RateLimited,
    ReplayedRequest,
    StoreUnavailable,
    UnknownKey,
    error_body,
)
from flask_hybrid.exchange import wire_limit

from .builders import (
    e_envelope,
    j_header,
    j_token,
    new_session,
    s_envelope,
    session_headers,
    state_of,
)
from .conftest import JWT_SECRET

ECHO = b'{"order":1}'


def assert_refused(response: Any, error: type, *, signed: bool = True) -> None:
    assert response.status_code == error.code
    assert response.content_type == "application/json"
    assert response.data == error_body(error)
    assert ("X-Response-Signature" in response.headers) is signed


def identity_public_key(flask_app: Flask) -> rsa.PublicKey:
    return state_of(flask_app).keyring.current.private_key.public_key()


def post_jose(flask_app: Flask, target: str, token: str, **headers: str) -> Any:
    return flask_app.test_client().post(
        target, data=token, headers={"Content-Type": "application/jose", **headers}
    )


def test_every_code_has_one_fixed_body() -> None:
    bodies = {code: json.loads(error_body(cls)) for code, cls in ERRORS.items()}
    assert set(bodies) == {
        "invalid_payload",
        "invalid_session",
        "unknown_key",
        "replayed_request",
        "payload_too_large",
        "encryption_required",
        "rate_limited",
        "store_unavailable",
        "key_config_mismatch",
    }
    for code, body in bodies.items():
        if ERRORS[code].problem_type is not None:  # format H's 422: RFC 9457 problem details
            assert list(body) == ["type", "title", "status", "error"] and body["error"] == code
            continue
        assert body["error"] == code and list(body) == ["error", "message"]


# --- 400 invalid_payload ------------------------------------------------------------------------
def _e(flask_app: Flask, body: Any, raw: bytes | None = None) -> Any:
    return flask_app.test_client().post(
        "/api/echo",
        data=raw if raw is not None else json.dumps(body),
        headers={"X-Encryption-Enabled": "true", "Content-Type": "application/json"},
    )


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"not json", id="not-json"),
        pytest.param(b"[1,2]", id="json-array"),
        pytest.param(b'{"hello":"world"}', id="no-known-shape"),
        pytest.param(b"\xff\xfe", id="not-utf8"),
        pytest.param(b'{"ek":"a","ek":"b"}', id="duplicate-member"),
        pytest.param(b'{"alg":"RSA+AES-GCM","ek":1,"iv":"","ct":""}', id="wrong-type"),
    ],
)
def test_malformed_envelopes_are_invalid_payload(app: Flask, raw: bytes) -> None:
    assert_refused(_e(app, None, raw), InvalidPayload)


def test_plaintext_that_is_not_json_is_invalid_payload(app: Flask) -> None:
    envelope, _ = e_envelope(identity_public_key(app), b"not json at all")
    assert_refused(_e(app, envelope), InvalidPayload)
    session = new_session(app)
    s_body, _ = s_envelope(session, b"\xff\xfe not utf-8")
    response = app.test_client().post("/api/echo", json=s_body, headers=session_headers(session))
    assert_refused(response, InvalidPayload)


def test_e_bad_iv_length_and_unknown_alg(app: Flask) -> None:
    envelope, _ = e_envelope(identity_public_key(app), ECHO)
    assert_refused(_e(app, {**envelope, "iv": b64encode(b"\0" * 16)}), InvalidPayload)
    assert_refused(_e(app, {**envelope, "alg": "RSA-OAEP+AES-GCM"}), InvalidPayload)
    assert_refused(_e(app, {**envelope, "ct": b64encode(b"short")}), InvalidPayload)


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"htm": None}, id="missing-htm"),
        pytest.param({"htu": None}, id="missing-htu"),
        pytest.param({"iat": None}, id="missing-iat"),
        pytest.param({"iat": "now"}, id="string-iat"),
        pytest.param({"iat": True}, id="bool-iat"),
        pytest.param({"jti": "c2hvcnQ"}, id="short-jti"),
        pytest.param({"htu": "http://host/api/echo"}, id="absolute-htu"),
        pytest.param({"enc": "A128GCM"}, id="other-enc"),
        pytest.param({"zip": "DEF"}, id="zip"),
        pytest.param({"crit": ["htm"]}, id="crit"),
    ],
)
def test_j_header_defects_are_invalid_payload(app: Flask, overrides: dict) -> None:
    kid = state_of(app).keyring.current.kid
    header = j_header(kid, "POST", "/api/echo", **overrides)
    if header.get("enc") == "A128GCM":  # jwe.encrypt writes only our profile: patch after
        header["enc"] = "A256GCM"
        token, _ = j_token(identity_public_key(app), header, ECHO)
        token = _rewrite_header(token, {**header, "enc": "A128GCM"})
    else:
        token, _ = j_token(identity_public_key(app), header, ECHO)
    assert_refused(post_jose(app, "/api/echo", token), InvalidPayload)


def _rewrite_header(token: str, header: dict) -> str:
    from flask_hybrid.core.encoding import b64url_encode, dumps_compact

    return ".".join([b64url_encode(dumps_compact(header)), *token.split(".")[1:]])


@pytest.mark.parametrize(
    "token",
    ["", "a.b.c", "a.b.c.d.e", "....", "x" * 100, "é.é.é.é.é"],
    ids=["empty", "three-parts", "garbage-parts", "empty-parts", "no-dots", "non-ascii"],
)
def test_j_syntax_defects_are_invalid_payload(app: Flask, token: str) -> None:
    response = app.test_client().post(
        "/api/echo", data=token.encode(), headers={"Content-Type": "application/jose"}
    )
    assert_refused(response, InvalidPayload)


def test_j_payload_rules(app: Flask) -> None:
    kid = state_of(app).keyring.current.kid
    key = identity_public_key(app)
    # No cty: the plaintext must be JSON.
    token, _ = j_token(key, j_header(kid, "POST", "/api/echo", cty=None), b"plain text")
    assert_refused(post_jose(app, "/api/echo", token), InvalidPayload)
    # An empty payload is for the X-Hybrid-JWE header form only.
    token, _ = j_token(key, j_header(kid, "POST", "/api/echo"), b"")
    assert_refused(post_jose(app, "/api/echo", token), InvalidPayload)
    # The header form is for bodiless requests only.
    token, _ = j_token(key, j_header(kid, "POST", "/api/echo"), b"")
    response = app.test_client().post(
        "/api/echo", data=b"{}", headers={"X-Hybrid-JWE": token, "Content-Type": "text/plain"}
    )
    assert_refused(response, InvalidPayload)


def test_j_declared_content_type_reaches_the_view(make_app: Callable[..., Flask]) -> None:
    flask_app = make_app()

    @flask_app.post("/api/text")
    def text_view() -> dict:
        from flask import request

        return {"type": request.content_type, "body": request.get_data(as_text=True)}

    kid = state_of(flask_app).keyring.current.kid
    header = j_header(kid, "POST", "/api/text", cty="text/plain")
    token, cek = j_token(identity_public_key(flask_app), header, b"hello")
    response = post_jose(flask_app, "/api/text", token)
    assert response.status_code == 200
    _, opened = formats.open_response(
        response.get_data(as_text=True), cek, request_jti=header["jti"]
    )
    assert json.loads(opened) == {"type": "text/plain", "body": "hello"}


def test_disabled_format_is_invalid_payload(make_app: Callable[..., Flask]) -> None:
    flask_app = make_app(HYBRID_FORMATS=["S", "J"])
    envelope, _ = e_envelope(identity_public_key(flask_app), ECHO)
    assert_refused(_e(flask_app, envelope), InvalidPayload)


# --- 401 invalid_session ------------------------------------------------------------------------
def _s_request(flask_app: Flask, session: dict, headers: dict[str, str], **kw: Any) -> Any:
    body, _ = s_envelope(session, ECHO)
    return flask_app.test_client().post("/api/echo", json=body, headers=headers, **kw)


def test_missing_token(app: Flask) -> None:
    session = new_session(app)
    headers = session_headers(session)
    del headers["Authorization"]
    assert_refused(_s_request(app, session, headers), InvalidSession)


def test_forged_token(app: Flask) -> None:
    session = new_session(app)
    claims = jwt.decode(session["token"], options={"verify_signature": False})
    forged = jwt.encode(claims, "another-secret-" + "y" * 40, algorithm="HS256")
    headers = {**session_headers(session), "Authorization": f"Bearer {forged}"}
    assert_refused(_s_request(app, session, headers), InvalidSession)
    unsigned = jwt.encode(claims, None, algorithm="none")
    headers = {**session_headers(session), "Authorization": f"Bearer {unsigned}"}
    assert_refused(_s_request(app, session, headers), InvalidSession)


def test_expired_token(app: Flask) -> None:
    session = new_session(app)
    claims = jwt.decode(session["token"], JWT_SECRET, algorithms=["HS256"])
    claims["exp"] = int(time.time()) - 10
    expired = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    headers = {**session_headers(session), "Authorization": f"Bearer {expired}"}
    assert_refused(_s_request(app, session, headers), InvalidSession)


def test_session_gone_after_delete(app: Flask) -> None:
    session = new_session(app)
    client = app.test_client()
    headers = session_headers(session)
    assert _s_request(app, session, headers).status_code == 200
    ending = {name: headers[name] for name in ("Authorization", "X-Device-Id")}
    deleted = client.delete("/hybrid/session", headers=ending)
    assert deleted.status_code == 204 and deleted.data == b""
    assert_refused(_s_request(app, session, headers), InvalidSession)
    again = client.delete("/hybrid/session", headers=ending)
    assert_refused(again, InvalidSession)  # the session endpoint's answers are all signed


def test_device_mismatch(app: Flask) -> None:
    session = new_session(app)
    headers = {**session_headers(session), "X-Device-Id": "someone-else"}
    assert_refused(_s_request(app, session, headers), InvalidSession)


def test_address_mismatch_and_binding_off(make_app: Callable[..., Flask]) -> None:
    bound = make_app()
    session = new_session(bound)
    response = _s_request(
        bound, session, session_headers(session), environ_base={"REMOTE_ADDR": "10.9.9.9"}
    )
    assert_refused(response, InvalidSession)
    unbound = make_app(HYBRID_BIND_IP=False)
    session = new_session(unbound)
    response = _s_request(
        unbound, session, session_headers(session), environ_base={"REMOTE_ADDR": "10.9.9.9"}
    )
    assert response.status_code == 200


def test_session_kid_without_matching_token(app: Flask) -> None:
    first, second = new_session(app), new_session(app, device_id="second-device")
    header = j_header(first["sessionId"], "POST", "/api/echo")
    token, _ = j_token(first["public_key"], header, ECHO)
    # no token at all, for a live session id
    assert_refused(post_jose(app, "/api/echo", token), InvalidSession)
    # the token of another session
    header = j_header(first["sessionId"], "POST", "/api/echo")
    token, _ = j_token(first["public_key"], header, ECHO)
    other = session_headers(second)
    del other["X-Encryption-Enabled"]
    assert_refused(post_jose(app, "/api/echo", token, **other), InvalidSession)


def test_token_of_expired_session_in_store(make_app: Callable[..., Flask]) -> None:
    flask_app = make_app()
    session = new_session(flask_app)
    store = state_of(flask_app).sessions.store
    store.delete(f"session:{session['sessionId']}")  # what a TTL expiry leaves behind
    assert_refused(_s_request(flask_app, session, session_headers(session)), InvalidSession)


# --- 401 unknown_key ----------------------------------------------------------------------------
def test_unknown_kid(app: Flask) -> None:
    envelope, _ = e_envelope(identity_public_key(app), ECHO, kid="no-such-key")
    assert_refused(_e(app, envelope), UnknownKey)
    header = j_header("00000000-0000-4000-8000-000000000000", "POST", "/api/echo")
    token, _ = j_token(identity_public_key(app), header, ECHO)
    assert_refused(post_jose(app, "/api/echo", token), UnknownKey)


# --- 409 replayed_request -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "target", "iat_offset"),
    [
        pytest.param("PUT", "/api/echo", 0, id="wrong-htm"),
        pytest.param("post", "/api/echo", 0, id="lower-case-htm"),
        pytest.param("POST", "/api/echo?x=1", 0, id="wrong-htu-query"),
        pytest.param("POST", "/api/other", 0, id="wrong-htu-path"),
        pytest.param("POST", "/api/echo", -301, id="stale-iat"),
        pytest.param("POST", "/api/echo", 301, id="future-iat"),
    ],
)
def test_binding_mismatch_is_replayed_request(
    app: Flask, method: str, target: str, iat_offset: int
) -> None:
    kid = state_of(app).keyring.current.kid
    # A future iat rounded up, a past one down: never a second nearer, inside the window.
    iat = (math.ceil if iat_offset > 0 else math.floor)(time.time()) + iat_offset
    header = j_header(kid, method, target, iat=iat)
    token, _ = j_token(identity_public_key(app), header, ECHO)
    assert_refused(post_jose(app, "/api/echo", token), ReplayedRequest)


def test_iat_window_edges_and_configured_window(make_app: Callable[..., Flask]) -> None:
    flask_app = make_app(HYBRID_REPLAY_WINDOW=60)
    now = 1_800_000_000
    state_of(flask_app).clock = lambda: now
    kid = state_of(flask_app).keyring.current.kid
    for offset, status in ((-60, 200), (60, 200), (-61, 409), (61, 409)):
        token, _ = j_token(
            identity_public_key(flask_app),
            j_header(kid, "POST", "/api/echo", iat=now + offset),
            ECHO,
        )
        assert post_jose(flask_app, "/api/echo", token).status_code == status, offset


def test_jti_replay_and_record_only_after_success(app: Flask) -> None:
    kid = state_of(app).keyring.current.kid
    header = j_header(kid, "POST", "/api/echo")
    token, _ = j_token(identity_public_key(app), header, ECHO)
    # A failing attempt under the same jti (wrong path) does not burn the jti...
    wrong_path = post_jose(app, "/api/other", token)
    assert_refused(wrong_path, ReplayedRequest)
    # ...so the genuine request still goes through once, and only once.
    assert post_jose(app, "/api/echo", token).status_code == 200
    assert_refused(post_jose(app, "/api/echo", token), ReplayedRequest)


def test_jti_replay_holds_across_processes(
    make_app: Callable[..., Flask], redis_url: str, redis_prefix: str
) -> None:
    config = {"HYBRID_STORE_URL": redis_url, "HYBRID_STORE_KEY_PREFIX": redis_prefix}
    first, second = make_app(**config), make_app(**config)
    kid = state_of(first).keyring.current.kid
    token, _ = j_token(identity_public_key(first), j_header(kid, "POST", "/api/echo"), ECHO)
    assert post_jose(first, "/api/echo", token).status_code == 200
    assert_refused(post_jose(second, "/api/echo", token), ReplayedRequest)


# --- 413 payload_too_large ----------------------------------------------------------------------
def test_declared_length_over_limit_is_refused_unread(make_app: Callable[..., Flask]) -> None:
    flask_app = make_app(HYBRID_MAX_BODY=1024)
    envelope, _ = e_envelope(identity_public_key(flask_app), b'{"pad":"' + b"x" * 20000 + b'"}')
    assert len(json.dumps(envelope)) > wire_limit(1024)
    assert_refused(_e(flask_app, envelope), PayloadTooLarge)


@pytest.mark.parametrize("size", [1024, 1025])
def test_the_limit_counts_the_plaintext(make_app: Callable[..., Flask], size: int) -> None:
    """HYBRID_MAX_BODY is the largest plaintext: its ciphertext (base64, 4/3 as large) fits."""
    flask_app = make_app(HYBRID_MAX_BODY=1024)
    plaintext = b'{"pad":"' + b"x" * (size - 10) + b'"}'
    assert len(plaintext) == size
    kid = state_of(flask_app).keyring.current.kid
    public_key = identity_public_key(flask_app)
    token, _ = j_token(public_key, j_header(kid, "POST", "/api/echo"), plaintext)
    envelope, _ = e_envelope(public_key, plaintext)
    for response in (post_jose(flask_app, "/api/echo", token), _e(flask_app, envelope)):
        if size <= 1024:
            assert response.status_code == 200
        else:
            assert_refused(response, PayloadTooLarge)


class CountingStream(io.RawIOBase):
    """An endless request body that counts how much of it was read."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = len(buffer)
        buffer[:size] = b"x" * size
        self.read_bytes += size
        return size


def test_chunked_body_is_read_no_further_than_the_limit(app: Flask) -> None:
    state = state_of(app)
    seen: list[bool] = []

    def inner(environ: dict, start_response: Callable) -> list[bytes]:
        seen.append(True)
        start_response("200 OK", [])
        return [b""]

    limit = wire_limit(state.settings.max_body)  # what an encrypted plaintext that size takes
    middleware = HybridMiddleware(inner, state)
    stream = CountingStream()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/api/echo",
        "HTTP_X_ENCRYPTION_ENABLED": "true",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": io.BufferedReader(stream),
        "wsgi.input_terminated": True,
    }
    captured: dict = {}
    body = b"".join(middleware(environ, lambda s, h, e=None: captured.update(status=s)))
    assert captured["status"].startswith("413")
    assert body == error_body(PayloadTooLarge)
    assert stream.read_bytes <= limit + 128 * 1024  # the limit, plus one read's buffering
    assert not seen


# --- 415 encryption_required --------------------------------------------------------------------
def test_required_encryption_by_decorator_and_by_prefix(make_app: Callable[..., Flask]) -> None:
    flask_app = make_app(HYBRID_REQUIRE_ENCRYPTION=["/api/secure/"])

    @flask_app.post("/api/orders")
    @require_encryption
    def orders() -> dict:
        return {"ok": True}

    @flask_app.post("/api/secure/prices")
    def prices() -> dict:
        return {"ok": True}

    client = flask_app.test_client()
    for path in ("/api/orders", "/api/secure/prices"):
        # every refusal is signed, this one (to a plaintext request) too
        assert_refused(client.post(path, json={"a": 1}), EncryptionRequired)
        envelope, _ = e_envelope(identity_public_key(flask_app), ECHO)
        response = client.post(path, json=envelope, headers={"X-Encryption-Enabled": "true"})
        assert response.status_code == 200 and response.get_json() == {"ok": True}
    # Routes that do not require it still take plaintext.
    assert client.post("/api/echo", json={"a": 1}).status_code == 200
    # Multipart is never decrypted, so it is plaintext here.
    response = client.post(
        "/api/orders",
        data={"field": "value"},
        headers={"X-Encryption-Enabled": "true"},
        content_type="multipart/form-data",
    )
    assert_refused(response, EncryptionRequired)


# --- 429 rate_limited ---------------------------------------------------------------------------
def test_handshake_rate_limit(make_app: Callable[..., Flask]) -> None:
    flask_app = make_app(HYBRID_HANDSHAKE_LIMIT="2 per minute")
    client = flask_app.test_client()
    body = {"aesKey": b64encode(aead.new_cek()), "deviceId": "rate-test"}
    assert client.post("/hybrid/session", json=body).status_code == 201
    assert client.post("/hybrid/session", json=body).status_code == 201
    limited = client.post("/hybrid/session", json=body)
    assert_refused(limited, RateLimited)  # handshake responses are signed
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    # Per client address: another address still gets in.
    other = client.post("/hybrid/session", json=body, environ_base={"REMOTE_ADDR": "10.0.0.2"})
    assert other.status_code == 201
    # Only the handshake is limited.
    assert client.get("/hybrid/public-key").status_code == 200


# --- 503 store_unavailable ----------------------------------------------------------------------
def test_store_down_is_503_and_e_keeps_working(
    make_app: Callable[..., Flask], own_redis_server: Any
) -> None:
    flask_app = make_app(
        HYBRID_STORE_URL=own_redis_server.url, HYBRID_RATELIMIT_STORAGE_URL="memory://"
    )
    client = flask_app.test_client()
    session = new_session(flask_app)
    kid = state_of(flask_app).keyring.current.kid
    own_redis_server.stop()

    handshake = client.post(
        "/hybrid/session", json={"aesKey": b64encode(aead.new_cek()), "deviceId": "d-1"}
    )
    assert_refused(handshake, StoreUnavailable)
    assert_refused(_s_request(flask_app, session, session_headers(session)), StoreUnavailable)
    token, _ = j_token(identity_public_key(flask_app), j_header(kid, "POST", "/api/echo"), ECHO)
    assert_refused(post_jose(flask_app, "/api/echo", token), StoreUnavailable)
    envelope, _ = e_envelope(identity_public_key(flask_app), ECHO)
    assert _e(flask_app, envelope).status_code == 200  # E needs no store

    own_redis_server.start()  # the same app, untouched, recovers by itself
    token, _ = j_token(identity_public_key(flask_app), j_header(kid, "POST", "/api/echo"), ECHO)
    assert post_jose(flask_app, "/api/echo", token).status_code == 200
    # This Redis keeps nothing on disk, so the old session died with it: the client is told so
    # and a new handshake works on the recovered store.
    assert_refused(_s_request(flask_app, session, session_headers(session)), InvalidSession)
    fresh = new_session(flask_app)
    assert _s_request(flask_app, fresh, session_headers(fresh)).status_code == 200


def test_store_on_a_closed_port_is_503(make_app: Callable[..., Flask]) -> None:
    from .redis_server import free_port

    flask_app = make_app(
        HYBRID_STORE_URL=f"redis://127.0.0.1:{free_port()}/0",
        HYBRID_RATELIMIT_STORAGE_URL="memory://",
    )
    started = time.monotonic()
    response = flask_app.test_client().post(
        "/hybrid/session", json={"aesKey": b64encode(aead.new_cek()), "deviceId": "d-1"}
    )
    assert_refused(response, StoreUnavailable)
    assert time.monotonic() - started < 3  # a bounded wait


def test_rate_limiter_on_redis_outage_does_not_5xx(
    make_app: Callable[..., Flask], own_redis_server: Any
) -> None:
    flask_app = make_app(HYBRID_STORE_URL=own_redis_server.url)
    own_redis_server.stop()
    response = flask_app.test_client().post(
        "/hybrid/session", json={"aesKey": b64encode(aead.new_cek()), "deviceId": "d-1"}
    )
    assert_refused(response, StoreUnavailable)
    own_redis_server.start()
    assert new_session(flask_app)["token"]


def test_no_plaintext_or_key_in_logs(app: Flask, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG")
    secret = b'{"card":"4111111111111111"}'
    envelope, cek = e_envelope(identity_public_key(app), secret)
    envelope["ct"] = envelope["ct"][:-4] + ("AAA=" if envelope["ct"][-4:] != "AAA=" else "BBB=")
    assert _e(app, envelope).status_code == 400
    logged = caplog.text
    assert "4111" not in logged and b64encode(cek) not in logged and envelope["ek"] not in logged
    assert "invalid_payload" in logged


def test_payload_too_large_over_real_http(live_server_factory: Callable[..., Any]) -> None:
    """Both 413 paths through a real server: a declared length, and a chunked body."""
    import http.client

    live = live_server_factory(HYBRID_MAX_BODY=4096)
    port = live.server.server_port
    for chunked in (False, True):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        body = b'{"ek":"' + b"A" * (wire_limit(4096) + 1) + b'"}'
        headers = {"X-Encryption-Enabled": "true", "Content-Type": "application/json"}
        if chunked:
            connection.request(
                "POST",
                "/api/echo",
                body=iter([body[:8000], body[8000:]]),
                headers=headers,
                encode_chunked=True,
            )
        else:
            connection.request("POST", "/api/echo", body=body, headers=headers)
        response = connection.getresponse()
        assert response.status == 413, chunked
        assert response.read() == error_body(PayloadTooLarge)
        assert response.getheader("X-Response-Signature")
        connection.close()


def test_limiter_storage_shares_the_store_redis_with_a_bounded_wait(
    make_app: Callable[..., Flask], redis_url: str, redis_prefix: str
) -> None:
    flask_app = make_app(HYBRID_STORE_URL=redis_url, HYBRID_STORE_KEY_PREFIX=redis_prefix)
    redis_client = state_of(flask_app).limits.storage.storage  # type: ignore[attr-defined]
    assert redis_client.connection_pool.connection_kwargs["socket_timeout"] == 0.5
    new_session(flask_app)
    assert redis_client.keys(f"{redis_prefix}ratelimit:*")  # counted in the store's Redis


def test_handshake_body_is_capped(app: Flask) -> None:
    big = {"aesKey": b64encode(aead.new_cek()), "deviceId": "d", "pad": "x" * 20_000}
    assert_refused(app.test_client().post("/hybrid/session", json=big), PayloadTooLarge)
    for bad in (
        {"aesKey": b64encode(b"short"), "deviceId": "d"},
        {"aesKey": "", "deviceId": "d"},
        {"aesKey": b64encode(aead.new_cek()), "deviceId": "has space"},
        {"aesKey": b64encode(aead.new_cek()), "deviceId": "x" * 129},
    ):
        assert_refused(app.test_client().post("/hybrid/session", json=bad), InvalidPayload)
    plain_text = app.test_client().post(
        "/hybrid/session", data='{"aesKey":"","deviceId":"d"}', content_type="text/plain"
    )
    assert_refused(plain_text, InvalidPayload)
