"""The middleware's answer path: CORS exposure of our headers, streaming of plain answers,
request-bound signatures on what leaves, and what it logs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask, Response
from flask_cors import CORS

from flask_hybrid import errors
from flask_hybrid.core import aead, signatures
from flask_hybrid.core.encoding import b64encode
from flask_hybrid.errors import error_body

from .builders import e_envelope, j_header, j_token, new_session, session_headers, state_of

ECHO = b'{"order":1}'
ORIGIN = "http://pages.example"
OUR_HEADERS = {
    "signature",
    "signature-input",
    "content-digest",
    "x-response-signature",
    "x-response-signature-kid",
}


def exposed(response: Any) -> set[str]:
    value = response.headers.get("Access-Control-Expose-Headers", "")
    return {name.strip().lower() for name in value.split(",") if name.strip()}


def cors_app(make_app: Callable[..., Flask], **config: Any) -> Flask:
    flask_app = make_app(**config)
    CORS(flask_app, origins=[ORIGIN], expose_headers=["X-Own-Header"])
    return flask_app


def test_cors_refusal_carries_allow_origin_and_exposes_our_headers(
    make_app: Callable[..., Flask],
) -> None:
    flask_app = cors_app(make_app)
    public_key = state_of(flask_app).keyring.current.private_key.public_key()
    envelope, _ = e_envelope(public_key, ECHO)
    envelope["iv"] = "AAAAAAAAAAAAAAAA"
    response = flask_app.test_client().post(
        "/api/echo",
        json=envelope,
        headers={"X-Encryption-Enabled": "true", "Origin": ORIGIN},
    )
    assert response.status_code == 400 and response.data == error_body(errors.InvalidPayload)
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
    assert OUR_HEADERS | {"x-own-header"} <= exposed(response)


def test_cors_exposes_retry_after_and_plaintext_type(make_app: Callable[..., Flask]) -> None:
    flask_app = cors_app(make_app, HYBRID_HANDSHAKE_LIMIT="1 per minute")
    client = flask_app.test_client()
    body = {"aesKey": b64encode(aead.new_cek()), "deviceId": "d"}
    assert client.post("/hybrid/session", json=body, headers={"Origin": ORIGIN}).status_code == 201
    limited = client.post("/hybrid/session", json=body, headers={"Origin": ORIGIN})
    assert limited.status_code == 429
    assert {"retry-after", *OUR_HEADERS} <= exposed(limited)
    session = new_session(flask_app, ip="127.0.0.2")
    envelope, _ = e_envelope(state_of(flask_app).keyring.current.private_key.public_key(), ECHO)
    sealed = client.post(
        "/api/echo",
        json=envelope,
        headers={"X-Encryption-Enabled": "true", "X-Encrypt-Response": "true", "Origin": ORIGIN},
    )
    assert {"x-plaintext-content-type"} <= exposed(sealed)
    assert session  # a second address still gets its own handshake


def test_plain_cors_answers_gain_nothing(make_app: Callable[..., Flask]) -> None:
    flask_app = cors_app(make_app)
    response = flask_app.test_client().post("/api/echo", json={"a": 1}, headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert exposed(response) == {"x-own-header"}
    assert "Signature" not in response.headers


def test_plain_answers_stream_through(make_app: Callable[..., Flask]) -> None:
    flask_app = make_app()
    produced: list[int] = []

    @flask_app.get("/stream")
    def stream() -> Response:
        def chunks() -> Iterator[bytes]:
            for index in range(3):
                produced.append(index)
                yield b"chunk"

        return Response(chunks(), mimetype="text/plain")

    response = flask_app.test_client().get("/stream", buffered=False)
    # Werkzeug's test client reads one chunk ahead; a buffering middleware would read them all.
    assert produced == [0]
    assert b"".join(response.response) == b"chunk" * 3  # type: ignore[arg-type]
    assert produced == [0, 1, 2]


def verify_bound(
    flask_app: Flask,
    response: Any,
    method: str,
    sent: list[tuple[str, str]],
    cek: bytes | None = None,
) -> signatures.VerifiedAnswer:
    signing = state_of(flask_app).keyring.signing
    return signatures.verify_response(
        {signing.kid: signing.private_key.public_key()},
        status=response.status_code,
        headers=list(response.headers.items()),
        body=response.data,
        request=signatures.AnsweredRequest(method, sent),
        cek=cek,
    )


def test_refusal_is_bound_to_the_request_it_answers(make_app: Callable[..., Flask]) -> None:
    flask_app = make_app()
    client = flask_app.test_client()
    public_key = state_of(flask_app).keyring.current.private_key.public_key()
    answers = []
    for _ in range(2):
        envelope, _ = e_envelope(public_key, ECHO)
        envelope["iv"] = "AAAAAAAAAAAAAAAA"
        import json

        wire = json.dumps(envelope).encode()
        sent = [("Content-Digest", signatures.content_digest(wire))]
        response = client.post(
            "/api/echo",
            data=wire,
            headers={
                "X-Encryption-Enabled": "true",
                "Content-Type": "application/json",
                **dict(sent),
            },
        )
        assert response.status_code == 400
        assert verify_bound(flask_app, response, "POST", sent).refusal == "invalid_payload"
        answers.append((response, sent))
    (first, first_sent), (second, second_sent) = answers
    assert first.data == second.data  # the same bytes for every cause ...
    with pytest.raises(signatures.InvalidSignature):  # ... but not the same request
        verify_bound(flask_app, first, "POST", second_sent)
    with pytest.raises(signatures.InvalidSignature):
        verify_bound(flask_app, first, "PUT", first_sent)


def test_bodiless_answer_to_a_sealed_request_is_bound_to_its_key_header(
    make_app: Callable[..., Flask],
) -> None:
    flask_app = make_app()

    @flask_app.delete("/api/thing")
    def delete_thing() -> tuple[str, int]:
        return "", 204

    keyring = state_of(flask_app).keyring
    header = j_header(keyring.current.kid, "DELETE", "/api/thing", cty=None)
    token, cek = j_token(keyring.current.private_key.public_key(), header, b"")
    sent = [("Content-Digest", signatures.content_digest(b"")), ("X-Hybrid-JWE", token)]
    response = flask_app.test_client().delete("/api/thing", headers=dict(sent))
    assert response.status_code == 204 and response.data == b""
    assert '"x-hybrid-jwe";req' in response.headers["Signature-Input"]
    # An answer of the app to a request whose CEK the server holds: bound by an HMAC under it.
    assert 'keyid="cek";alg="hmac-sha256"' in response.headers["Signature-Input"]
    assert verify_bound(flask_app, response, "DELETE", sent, cek).kid == signatures.CEK_KEYID
    with pytest.raises(signatures.InvalidSignature):  # only the request's CEK vouches for it
        verify_bound(flask_app, response, "DELETE", sent)
    other = [sent[0], ("X-Hybrid-JWE", token[:-2] + "AA")]
    with pytest.raises(signatures.InvalidSignature):
        verify_bound(flask_app, response, "DELETE", other, cek)


def test_session_answers_are_signed_and_bound(make_app: Callable[..., Flask]) -> None:
    flask_app = make_app()
    session = new_session(flask_app)
    sent = [("Content-Digest", signatures.content_digest(b""))]
    headers = {**session_headers(session), **dict(sent)}
    headers.pop("X-Encryption-Enabled")
    response = flask_app.test_client().delete("/hybrid/session", headers=headers)
    assert response.status_code == 204
    verify_bound(flask_app, response, "DELETE", sent)


# --- logs -----------------------------------------------------------------------------------
def test_refusals_are_logged_at_info_with_method_path_format_and_reason(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    public_key = state_of(app).keyring.current.private_key.public_key()
    envelope, _ = e_envelope(public_key, ECHO)
    envelope["ct"] = (
        "A" + envelope["ct"][1:] if envelope["ct"][0] != "A" else "B" + envelope["ct"][1:]
    )
    with caplog.at_level(logging.DEBUG, logger="flask_hybrid"):
        app.test_client().post("/api/echo", json=envelope, headers={"X-Encryption-Enabled": "true"})
    [record] = [r for r in caplog.records if "refused" in r.getMessage()]
    assert record.levelno == logging.INFO
    assert record.getMessage().startswith("flask-hybrid refused POST /api/echo (format SE)")
    assert "invalid_payload" in record.getMessage() and record.exc_info is None
    assert envelope["ek"] not in caplog.text and envelope["ct"] not in caplog.text


def test_unexpected_errors_are_logged_with_a_traceback_and_answered_400(
    app: Flask, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flask_hybrid.core import formats

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in the envelope parser")

    monkeypatch.setattr(formats, "parse_envelope", broken)  # fault injection, not a mock
    public_key = state_of(app).keyring.current.private_key.public_key()
    envelope, _ = e_envelope(public_key, ECHO)
    with caplog.at_level(logging.INFO, logger="flask_hybrid"):
        response = app.test_client().post(
            "/api/echo", json=envelope, headers={"X-Encryption-Enabled": "true"}
        )
    assert response.status_code == 400 and response.data == error_body(errors.InvalidPayload)
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.exc_info is not None and "a bug in the envelope parser" in caplog.text
    assert b"a bug" not in response.data


def test_store_outage_is_logged_at_warning(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    from .redis_server import free_port

    flask_app = make_app(
        HYBRID_STORE_URL=f"redis://127.0.0.1:{free_port()}/0", HYBRID_STORE_TIMEOUT=0.2
    )
    keyring = state_of(flask_app).keyring
    header = j_header(keyring.current.kid, "POST", "/api/echo")
    token, _ = j_token(keyring.current.private_key.public_key(), header, ECHO)
    with caplog.at_level(logging.INFO, logger="flask_hybrid"):
        response = flask_app.test_client().post(
            "/api/echo", data=token, headers={"Content-Type": "application/jose"}
        )
    assert response.status_code == 503
    assert response.data == error_body(errors.StoreUnavailable)
    [record] = [r for r in caplog.records if "refused" in r.getMessage()]
    assert record.levelno == logging.WARNING and "store_unavailable" in record.getMessage()


def test_an_app_answer_that_looks_like_a_refusal_is_not_marked_as_one(
    make_app: Callable[..., Flask],
) -> None:
    """Format E answers in clear, signed: the app's own 401 unknown_key body must not pass
    for flask-hybrid's refusal (a client would retry, and the app run twice)."""
    flask_app = make_app()

    @flask_app.post("/api/lookalike")
    def lookalike() -> Response:
        response = Response(error_body(errors.UnknownKey), 401, content_type="application/json")
        response.headers[signatures.REFUSAL_HEADER] = "unknown_key"  # forged by the app: dropped
        return response

    import json

    public_key = state_of(flask_app).keyring.current.private_key.public_key()
    envelope, cek = e_envelope(public_key, ECHO)
    wire = json.dumps(envelope).encode()
    sent = [("Content-Digest", signatures.content_digest(wire))]
    response = flask_app.test_client().post(
        "/api/lookalike",
        data=wire,
        headers={"X-Encryption-Enabled": "true", "Content-Type": "application/json", **dict(sent)},
    )
    assert response.status_code == 401 and response.data == error_body(errors.UnknownKey)
    assert signatures.REFUSAL_HEADER not in response.headers
    assert verify_bound(flask_app, response, "POST", sent, cek).refusal is None


def test_handshake_and_delete_check_their_content_digest(make_app: Callable[..., Flask]) -> None:
    import json

    flask_app = make_app()
    client = flask_app.test_client()
    body = json.dumps({"aesKey": b64encode(aead.new_cek()), "deviceId": "d"}).encode()
    headers = {"Content-Type": "application/json"}
    wrong = client.post(
        "/hybrid/session",
        data=body,
        headers={**headers, "Content-Digest": signatures.content_digest(b"x")},
    )
    assert wrong.status_code == 400 and wrong.data == error_body(errors.InvalidPayload)
    right = client.post(
        "/hybrid/session",
        data=body,
        headers={**headers, "Content-Digest": signatures.content_digest(body)},
    )
    assert right.status_code == 201
    session = new_session(flask_app)
    delete_headers = {**session_headers(session), "Content-Digest": signatures.content_digest(b"x")}
    assert client.delete("/hybrid/session", headers=delete_headers).status_code == 400
