"""How the middleware reads an encrypted request's body: Content-Length and Content-Digest.

A request's ``Content-Digest`` (RFC 9530, docs/PROTOCOL.md "What the client sends") is checked
against the body as received: every ``sha-256`` and ``sha-512`` member must match.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
from typing import Any

import pytest
from flask import Flask

from flask_hybrid.errors import InvalidPayload, PayloadTooLarge, error_body

from .builders import e_envelope, j_header, j_token, state_of

ECHO = b'{"order":1}'


def e_body(flask_app: Flask) -> bytes:
    public_key = state_of(flask_app).keyring.current.private_key.public_key()
    envelope, _ = e_envelope(public_key, ECHO)
    return json_bytes(envelope)


def json_bytes(value: Any) -> bytes:
    return json.dumps(value).encode()


def digest(name: str, body: bytes) -> str:
    value = hashlib.new(name.replace("-", ""), body).digest()
    return f"{name}=:{base64.b64encode(value).decode()}:"


def post_e(flask_app: Flask, body: bytes, **headers: str) -> Any:
    return flask_app.test_client().post(
        "/api/echo",
        data=body,
        headers={"X-Encryption-Enabled": "true", "Content-Type": "application/json", **headers},
    )


def assert_invalid_payload(response: Any) -> None:
    assert response.status_code == 400
    assert response.data == error_body(InvalidPayload)


# --- Content-Digest -----------------------------------------------------------------------------
def test_matching_digest_is_accepted(app: Flask) -> None:
    body = e_body(app)
    response = post_e(app, body, **{"Content-Digest": digest("sha-256", body)})
    assert response.status_code == 200
    both = f"{digest('sha-256', body)}, {digest('sha-512', body)}"
    assert post_e(app, e_body(app), **{"Content-Digest": both}).status_code == 400  # other body
    body = e_body(app)
    both = f"{digest('sha-256', body)}, {digest('sha-512', body)}"
    assert post_e(app, body, **{"Content-Digest": both}).status_code == 200


def test_absent_digest_is_not_checked(app: Flask) -> None:
    assert post_e(app, e_body(app)).status_code == 200


@pytest.mark.parametrize(
    "field",
    [
        pytest.param(lambda body: digest("sha-256", body + b" "), id="sha-256-of-another-body"),
        pytest.param(
            lambda body: f"{digest('sha-256', body)}, {digest('sha-512', b'')}",
            id="sha-512-mismatch-beside-a-good-sha-256",
        ),
        pytest.param(lambda body: "sha-256=:" + "A" * 43 + "=:", id="zero-digest"),
        pytest.param(lambda body: digest("sha-256", body)[:-6] + ":", id="truncated"),
    ],
)
def test_mismatching_digest_is_refused(app: Flask, field: Any) -> None:
    seen: list[bool] = []
    app.before_request(lambda: seen.append(True) and None)
    body = e_body(app)
    assert_invalid_payload(post_e(app, body, **{"Content-Digest": field(body)}))
    assert not seen  # the app never ran


@pytest.mark.parametrize(
    "field",
    [
        pytest.param(lambda body: "sha-256=abc", id="token-not-bytes"),
        pytest.param(lambda body: "sha-256=:not base64:", id="bad-byte-sequence"),
        pytest.param(lambda body: "SHA-256=:AA==:", id="uppercase-key"),
        pytest.param(lambda body: f"{digest('sha-256', body)},", id="trailing-comma"),
        pytest.param(
            lambda body: f"{digest('sha-256', body)}, {digest('sha-256', body)}",
            id="duplicate-member",
        ),
        pytest.param(lambda body: "md5=:AAAAAAAAAAAAAAAAAAAAAA==:", id="no-sha-256-or-sha-512"),
        pytest.param(lambda body: "", id="empty"),
    ],
)
def test_malformed_digest_is_refused(app: Flask, field: Any) -> None:
    body = e_body(app)
    assert_invalid_payload(post_e(app, body, **{"Content-Digest": field(body)}))


def test_header_form_has_the_digest_of_the_empty_body(app: Flask) -> None:
    keyring = state_of(app).keyring
    public_key = keyring.current.private_key.public_key()

    def get(content_digest: str) -> Any:
        token, _ = j_token(public_key, j_header(keyring.current.kid, "GET", "/"), b"")
        headers = {"X-Hybrid-JWE": token, "Content-Digest": content_digest}
        return app.test_client().get("/", headers=headers)

    assert get(digest("sha-256", b"")).status_code == 200
    assert_invalid_payload(get(digest("sha-256", b"{}")))


class TrickleStream(io.RawIOBase):
    """A request body that arrives a few bytes per read."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count = min(len(buffer), 7, len(self.data))
        buffer[:count] = self.data[:count]
        self.data = self.data[count:]
        return count


def test_digest_covers_a_chunked_body_read_in_pieces(app: Flask) -> None:
    body = e_body(app)
    response = app.test_client().post(
        "/api/echo",
        headers={
            "X-Encryption-Enabled": "true",
            "Content-Type": "application/json",
            "Transfer-Encoding": "chunked",
            "Content-Digest": digest("sha-512", body),
        },
        environ_overrides={
            "wsgi.input": TrickleStream(body),
            "wsgi.input_terminated": True,
            "CONTENT_LENGTH": "",
        },
    )
    assert response.status_code == 200


# --- Content-Length -----------------------------------------------------------------------------
@pytest.mark.parametrize("declared", ["²", "٣", "+12", "1_0", "0x10", "1 2"])
def test_content_length_of_other_than_ascii_digits_is_refused_at_info(
    app: Flask, declared: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flask_hybrid")
    response = app.test_client().post(
        "/api/echo",
        data=e_body(app),
        headers={"X-Encryption-Enabled": "true", "Content-Type": "application/json"},
        environ_overrides={"CONTENT_LENGTH": declared},
    )
    assert_invalid_payload(response)
    assert [record.levelno for record in caplog.records] == [logging.INFO]


def test_content_length_with_thousands_of_digits_is_too_large(
    app: Flask, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="flask_hybrid")
    response = app.test_client().post(
        "/api/echo",
        data=e_body(app),
        headers={"X-Encryption-Enabled": "true", "Content-Type": "application/json"},
        environ_overrides={"CONTENT_LENGTH": "9" * 5000},
    )
    assert response.status_code == 413
    assert response.data == error_body(PayloadTooLarge)
    assert [record.levelno for record in caplog.records] == [logging.INFO]


def test_leading_zeros_and_spaces_are_a_length(app: Flask) -> None:
    body = e_body(app)
    response = app.test_client().post(
        "/api/echo",
        data=body,
        headers={"X-Encryption-Enabled": "true", "Content-Type": "application/json"},
        environ_overrides={"CONTENT_LENGTH": f" {'0' * 5000}{len(body)} "},
    )
    assert response.status_code == 200
