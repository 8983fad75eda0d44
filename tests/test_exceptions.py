"""Refusals enter Flask: the app's error handlers (by class or by status) and ``after_request``
hooks shape them, no view and no other hook runs, and the default bytes are the error table's."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, Response, request
from werkzeug.exceptions import BadRequest, Conflict, HTTPException

import flask_hybrid
from flask_hybrid import errors, exceptions
from flask_hybrid.errors import ERRORS, error_body

from .builders import e_envelope, j_header, j_token, state_of

ECHO = b'{"order":1}'


def tampered_e(flask_app: Flask) -> dict[str, Any]:
    public_key = state_of(flask_app).keyring.current.private_key.public_key()
    envelope, _ = e_envelope(public_key, ECHO)
    envelope["ct"] = ("A" if envelope["ct"][0] != "A" else "B") + envelope["ct"][1:]
    return envelope


def post_tampered(flask_app: Flask, path: str = "/api/echo") -> Any:
    return flask_app.test_client().post(
        path, json=tampered_e(flask_app), headers={"X-Encryption-Enabled": "true"}
    )


def replay_j(flask_app: Flask) -> tuple[Any, Any]:
    keyring = state_of(flask_app).keyring
    header = j_header(keyring.current.kid, "POST", "/api/echo")
    token, _ = j_token(keyring.current.private_key.public_key(), header, ECHO)
    client = flask_app.test_client()
    send = lambda: client.post(  # noqa: E731
        "/api/echo", data=token, headers={"Content-Type": "application/jose"}
    )
    return send(), send()


def test_the_family_is_werkzeug_http_exceptions() -> None:
    for code, core_class in ERRORS.items():
        http_class = getattr(flask_hybrid, core_class.__name__)
        assert issubclass(http_class, HTTPException) and issubclass(http_class, core_class)
        assert issubclass(http_class, flask_hybrid.HybridError)
        error = http_class("some_reason")
        assert (error.code, error.error, error.reason) == (core_class.code, code, "some_reason")
        response = error.get_response()
        assert response.status_code == core_class.code
        assert response.get_data() == error_body(core_class)
        assert "some_reason" not in repr(error) + str(error) + response.get_data(as_text=True)
    assert issubclass(flask_hybrid.ReplayedRequest, Conflict)
    assert issubclass(flask_hybrid.InvalidPayload, BadRequest)
    limited = exceptions.as_http_exception(errors.RateLimited(retry_after=7))
    assert limited.get_response().headers["Retry-After"] == "7"


def test_default_refusal_is_the_table_and_no_view_or_hook_runs(
    make_app: Callable[..., Flask],
) -> None:
    flask_app = make_app()
    seen: list[str] = []

    @flask_app.before_request
    def user_hook() -> None:
        seen.append(f"before:{request.get_data()!r}")

    @flask_app.post("/api/order")
    def order() -> dict[str, Any]:
        seen.append("view")
        return {"ok": True}

    response = post_tampered(flask_app, "/api/order")
    assert response.status_code == 400
    assert response.data == error_body(errors.InvalidPayload)
    assert response.headers["Cache-Control"] == "no-store"
    assert seen == []  # the refusal is raised before any other before_request hook


@pytest.mark.parametrize("register", ["by-class", "by-core-class", "by-status", "by-base"])
def test_app_error_handlers_see_refusals(make_app: Callable[..., Flask], register: str) -> None:
    flask_app = make_app()
    target: Any = {
        "by-class": flask_hybrid.ReplayedRequest,
        "by-core-class": errors.ReplayedRequest,
        "by-status": 409,
        "by-base": flask_hybrid.HybridError,
    }[register]

    @flask_app.errorhandler(target)
    def handler(error: Any) -> tuple[dict[str, Any], int]:
        assert isinstance(error, flask_hybrid.ReplayedRequest)
        return {"problem": error.error, "status": error.code}, 409

    first, replayed = replay_j(flask_app)
    assert first.status_code == 200
    assert replayed.status_code == 409
    assert replayed.get_json() == {"problem": "replayed_request", "status": 409}
    # What leaves is signed, including the app's own body.
    assert "Signature-Input" in replayed.headers and "X-Response-Signature" in replayed.headers


def test_generic_http_exception_handler_does_not_take_our_refusals(
    make_app: Callable[..., Flask],
) -> None:
    flask_app = make_app()

    @flask_app.errorhandler(HTTPException)
    def generic(error: HTTPException) -> tuple[str, int]:
        return "generic", error.code or 500

    assert post_tampered(flask_app).data == error_body(errors.InvalidPayload)
    assert flask_app.test_client().get("/nowhere").data == b"generic"


def test_after_request_hooks_apply_and_signatures_cover_what_leaves(
    make_app: Callable[..., Flask],
) -> None:
    flask_app = make_app()

    @flask_app.after_request
    def stamp(response: Response) -> Response:
        response.headers["X-Request-Id"] = "req-42"
        if response.status_code == 400:
            response.set_data(response.get_data() + b"\n")  # a hook that changes the bytes
        return response

    response = post_tampered(flask_app)
    assert response.headers["X-Request-Id"] == "req-42"
    assert response.data == error_body(errors.InvalidPayload) + b"\n"
    keyring = state_of(flask_app).keyring
    from flask_hybrid.core import rsa, signatures
    from flask_hybrid.core.encoding import b64decode

    signature = b64decode(response.headers["X-Response-Signature"])
    assert rsa.verify(keyring.signing.private_key.public_key(), signature, response.data)
    assert response.headers["Content-Digest"] == signatures.content_digest(response.data)
    assert response.headers["Content-Length"] == str(len(response.data))


def test_middleware_alone_answers_refusals_itself(vector_keys: dict[str, Any]) -> None:
    from flask_hybrid import HybridMiddleware, HybridState, SessionManager, Settings
    from flask_hybrid.core.keyring import KeyRing
    from flask_hybrid.stores import MemoryStore

    calls: list[bytes] = []

    def plain_wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        calls.append(environ["wsgi.input"].read())
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"ok":true}']

    state = HybridState(
        keyring=KeyRing.from_pems([vector_keys["identity_1"]["private_pem"]]),
        sessions=SessionManager(MemoryStore(), jwt_secret="s" * 32),
        settings=Settings(),
    )
    wrapped = HybridMiddleware(plain_wsgi_app, state)
    flask_app = Flask(__name__)
    flask_app.wsgi_app = wrapped  # type: ignore[method-assign]
    public_key = state.keyring.current.private_key.public_key()
    envelope, _ = e_envelope(public_key, ECHO)
    envelope["iv"] = "AAAAAAAAAAAAAAAA"
    response = flask_app.test_client().post(
        "/x", json=envelope, headers={"X-Encryption-Enabled": "true"}
    )
    assert response.status_code == 400 and response.data == error_body(errors.InvalidPayload)
    assert "Signature" in response.headers
    assert calls == []  # the wrapped app never saw it
    good, _ = e_envelope(public_key, ECHO)
    ok = flask_app.test_client().post("/x", json=good, headers={"X-Encryption-Enabled": "true"})
    assert ok.status_code == 200 and calls == [ECHO]


def test_refusal_is_answered_by_the_middleware_when_the_app_cannot_raise_it(
    vector_keys: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    """``refusals_through_app`` on an app without the blueprint: never the app's answer."""
    from flask_hybrid import HybridMiddleware, HybridState, SessionManager, Settings
    from flask_hybrid.core.keyring import KeyRing
    from flask_hybrid.stores import MemoryStore

    bare = Flask(__name__)
    ran: list[str] = []

    @bare.post("/x")
    def view() -> str:
        ran.append("view")
        return "ran"

    state = HybridState(
        keyring=KeyRing.from_pems([vector_keys["identity_1"]["private_pem"]]),
        sessions=SessionManager(MemoryStore(), jwt_secret="s" * 32),
        settings=Settings(),
    )
    bare.wsgi_app = HybridMiddleware(  # type: ignore[method-assign]
        bare.wsgi_app, state, refusals_through_app=True
    )
    public_key = state.keyring.current.private_key.public_key()
    envelope, _ = e_envelope(public_key, ECHO)
    envelope["iv"] = "AAAAAAAAAAAAAAAA"
    with caplog.at_level("ERROR", logger="flask_hybrid"):
        response = bare.test_client().post(
            "/x", json=envelope, headers={"X-Encryption-Enabled": "true"}
        )
    assert response.status_code == 400 and response.data == error_body(errors.InvalidPayload)
    assert any("did not raise a refusal" in record.message for record in caplog.records)
    assert ran == ["view"]  # it ran on an empty body (as a plain request would), unanswered


def test_get_encrypted_request(make_app: Callable[..., Flask]) -> None:
    flask_app = make_app()
    seen: list[Any] = []

    @flask_app.post("/api/info")
    def info() -> dict[str, Any]:
        encrypted = flask_hybrid.get_encrypted_request()
        seen.append(encrypted)
        return {"format": None if encrypted is None else encrypted.format}

    client = flask_app.test_client()
    assert client.post("/api/info", json={}).get_json() == {"format": None}
    public_key = state_of(flask_app).keyring.current.private_key.public_key()
    envelope, _ = e_envelope(public_key, ECHO)
    response = client.post("/api/info", json=envelope, headers={"X-Encryption-Enabled": "true"})
    assert response.get_json() == {"format": "E"}
    assert seen[0] is None and seen[1].format == "E" and seen[1].session_id is None
    assert "cek" not in repr(seen[1])


def test_require_encryption_on_a_view_that_handles_options(make_app: Callable[..., Flask]) -> None:
    flask_app = make_app()

    @flask_app.route("/api/own-options", methods=["OPTIONS", "POST"])
    @flask_hybrid.require_encryption
    def own_options() -> str:
        return "view"

    @flask_app.post("/api/auto-options")
    @flask_hybrid.require_encryption
    def auto_options() -> str:
        return "view"

    client = flask_app.test_client()
    refused = client.options("/api/own-options")
    assert refused.status_code == 415 and refused.data == error_body(errors.EncryptionRequired)
    assert client.options("/api/auto-options").status_code == 200  # Flask's own preflight


def test_sealed_answers_drop_validators_of_the_plaintext(make_app: Callable[..., Flask]) -> None:
    flask_app = make_app()

    @flask_app.post("/api/etag")
    def etag() -> Response:
        response = Response(json.dumps({"secret": 1}), content_type="application/json")
        response.add_etag()
        response.headers["Content-MD5"] = "x"
        response.headers["Digest"] = "sha-256=x"
        response.headers["Content-Digest"] = "sha-256=:x:"
        response.headers["X-Kept"] = "yes"
        return response

    public_key = state_of(flask_app).keyring.current.private_key.public_key()
    envelope, _ = e_envelope(public_key, ECHO)
    sealed = flask_app.test_client().post(
        "/api/etag",
        json=envelope,
        headers={"X-Encryption-Enabled": "true", "X-Encrypt-Response": "true"},
    )
    assert sealed.status_code == 200 and sealed.headers["X-Kept"] == "yes"
    for name in ("ETag", "Content-MD5", "Digest", "Content-Digest"):
        assert name not in sealed.headers, name
    envelope, _ = e_envelope(public_key, ECHO)
    signed = flask_app.test_client().post(
        "/api/etag", json=envelope, headers={"X-Encryption-Enabled": "true"}
    )
    assert "ETag" in signed.headers  # not sealed: the body is what it describes
    from flask_hybrid.core import signatures

    assert signed.headers["Content-Digest"] == signatures.content_digest(signed.data)


def test_middleware_alone_around_a_lazy_wsgi_app(vector_keys: dict[str, Any]) -> None:
    """A generator app calls start_response only when first read: plain and encrypted work."""
    from flask_hybrid import HybridMiddleware, HybridState, SessionManager, Settings
    from flask_hybrid.core import formats
    from flask_hybrid.core.keyring import KeyRing
    from flask_hybrid.stores import MemoryStore

    def lazy_app(environ: dict[str, Any], start_response: Any) -> Any:
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/json")])
        yield b'{"got":' + (body or b"null") + b"}"

    state = HybridState(
        keyring=KeyRing.from_pems([vector_keys["identity_1"]["private_pem"]]),
        sessions=SessionManager(MemoryStore(), jwt_secret="s" * 32),
        settings=Settings(),
    )
    host = Flask(__name__)
    host.wsgi_app = HybridMiddleware(lazy_app, state)  # type: ignore[method-assign]
    client = host.test_client()
    assert client.post("/x", json={"a": 1}).get_json() == {"got": {"a": 1}}
    envelope, cek = e_envelope(state.keyring.current.private_key.public_key(), ECHO)
    sealed = client.post(
        "/x",
        json=envelope,
        headers={"X-Encryption-Enabled": "true", "X-Encrypt-Response": "true"},
    )
    assert json.loads(formats.open_envelope_response(sealed.data, cek)) == {"got": {"order": 1}}
